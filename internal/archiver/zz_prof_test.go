package archiver

import (
	"context"
	"os"
	"path/filepath"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/store"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

func TestZZProf(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	ctx := context.Background()
	now := uint64(time.Now().Unix())
	since := now - 2*3600
	com := fixture.CommunityFromKey(fixture.Key(), time.Hour, since, archive.Topic{0xbe, 0, 0, 1})
	registry.New(b.Communities).Put(ctx, com)
	st := &store.Store{Bus: b, SortDir: t.TempDir()}
	n := 100_000
	var batch []archive.Message
	t0 := time.Now()
	fixture.Messages{N: n, From: since, To: since + 3600, Topics: com.Topics, Size: 300}.Each(func(m archive.Message) error {
		if batch = append(batch, m); len(batch) == 20000 {
			st.Ingest(ctx, com.ID, batch)
			batch = batch[:0]
		}
		return nil
	})
	t.Logf("ingest %v", time.Since(t0))
	upto, _ := st.Fence(ctx, com.ID)
	f, _ := os.Create("/tmp/prof/cpu.out")
	pprof.StartCPUProfile(f)
	t1 := time.Now()
	cnt := 0
	for range st.Between(com.ID, 0, upto).Messages(ctx, since, since+3600) {
		cnt++
	}
	t.Logf("read+sort %d in %v", cnt, time.Since(t1))
	t2 := time.Now()
	l := archive.Layout{DataDir: filepath.Join(t.TempDir(), "d"), TorrentDir: filepath.Join(t.TempDir(), "t")}
	res, err := archive.Build(ctx, l, archive.BuildOptions{Community: com.ID, Topics: com.Topics, From: since, To: since + 3600,
		Interval: time.Hour, Source: st.Between(com.ID, 0, upto)})
	pprof.StopCPUProfile()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("build (read again) %d messages in %v", res.Messages, time.Since(t2))
}
