package hostiletest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/messages"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
)

// boundShutdown is how long SIGTERM may take to end the all-in-one, a build
// running or not (RELIABILITY.md).
const boundShutdown = 15 * time.Second

// TestShutdownMidBuild: SIGTERM while a large window is being built ends
// the process within boundShutdown, and after a restart the window is built
// with every message: the interrupted event was not lost.
func TestShutdownMidBuild(t *testing.T) {
	const n = 300_000
	f := startFleet(t)
	b := f.Bus(t)
	ctx := context.Background()
	now := uint64(time.Now().Unix())
	since := now - 2*3600
	key := fixture.Key()
	com := fixture.CommunityFromKey(key, time.Hour, since, archive.Topic{0xab, 1, 2, 4})
	com.Disabled = true // no build before every message is in
	reg := registry.New(b.Communities)
	if err := reg.Put(ctx, com); err != nil {
		t.Fatal(err)
	}
	st := &messages.Store{Bus: b}
	var batch []archive.Message
	flush := func() {
		res, err := st.Ingest(ctx, com.ID, batch)
		if err != nil || res.Stored != len(batch) {
			t.Fatalf("ingest: %+v %v", res, err)
		}
		batch = batch[:0]
	}
	fixture.Messages{N: n, From: since, To: since + 3600, Topics: com.Topics, Size: 40}.Each(func(m archive.Message) error {
		if batch = append(batch, m); len(batch) == 20_000 {
			flush()
		}
		return nil
	})
	flush()
	com.Disabled = false
	if err := reg.Put(ctx, com); err != nil {
		t.Fatal(err)
	}
	f.WaitLog(t, 60*time.Second, "build started", com.ID.String()[:10])
	took := f.Stop(t, 2*time.Minute)
	report(t, "SIGTERM during the build of a %d-message window: exited in %v (bound %v), code %d", n, took.Round(10*time.Millisecond), boundShutdown, f.ExitCode())
	if took > boundShutdown {
		t.Errorf("shutdown took %v", took)
	}
	if f.ExitCode() != 0 {
		t.Errorf("exit code %d", f.ExitCode())
	}
	if line, ok := f.FindLog("archives committed", com.ID.String()[:10]); ok {
		t.Logf("the build committed before the signal took effect: %s", line)
	}
	g := restartFleet(t, f)
	line := g.WaitLog(t, 5*time.Minute, "archives committed", "messages=")
	t.Logf("after the restart: %s", line)
	gb := g.Bus(t)
	deadline := time.Now().Add(5 * time.Minute)
	for {
		bs, _, err := (&state.Store{KV: gb.State}).GetBuild(ctx, com.ID.String())
		if err != nil {
			t.Fatal(err)
		}
		if bs.LastEnd >= since+3600 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("window not built after the restart: state %+v", bs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	msgs, _, err := fixture.ReadFolder(filepath.Join(g.DataDir, "archiver", "archivedata", com.ID.String()), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != n {
		t.Fatalf("%d messages archived, want %d", len(msgs), n)
	}
}
