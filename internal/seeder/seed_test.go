package seeder

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// producer stands in for the archiver: it builds one more window, stores the
// artefacts and commits the state.
type producer struct {
	t     testing.TB
	b     *bus.Bus
	com   *registry.Community
	l     archive.Layout
	st    state.Build
	rev   uint64
	start uint64
}

func (p *producer) next(i int) string {
	ctx := context.Background()
	from := p.start + uint64(i)*60
	msgs := fixture.Messages{N: 5, From: from, To: from + 5, Topics: p.com.Topics[:1], Size: 200}.Make()
	res, err := archive.Build(ctx, p.l, archive.BuildOptions{Community: p.com.ID, Topics: p.com.Topics, From: from, To: from + 60,
		Interval: 60 * time.Second, Source: archive.NewSliceSource(msgs), Torrent: archive.TorrentOptions{AnnounceList: [][]string{}}})
	if err != nil {
		p.t.Fatal(err)
	}
	c := p.com.ID.String()
	data, _ := os.ReadFile(filepath.Join(p.l.ArchiveDir(p.com.ID), archive.DataFile))
	for _, e := range res.Archives {
		put(p.t, p.b, state.ObjectArchive(c, e.ID), data[e.Offset:e.Offset+e.Size])
		p.st.Archives = append(p.st.Archives, state.ArchiveRef{ID: e.ID, Offset: e.Offset, Size: e.Size})
	}
	index, _ := os.ReadFile(filepath.Join(p.l.ArchiveDir(p.com.ID), archive.IndexFile))
	torrent, _ := os.ReadFile(p.l.TorrentPath(p.com.ID))
	put(p.t, p.b, state.ObjectIndex(c, res.InfoHash), index)
	put(p.t, p.b, state.ObjectTorrent(c, res.InfoHash), torrent)
	p.st.LastEnd, p.st.InfoHash, p.st.Magnet, p.st.DataBytes, p.st.Fence = from+60, res.InfoHash, res.Magnet, res.DataBytes, int64(i+1)
	p.rev, err = (&state.Store{KV: p.b.State}).Put(ctx, c, &p.st, p.rev)
	if err != nil {
		p.t.Fatal(err)
	}
	return res.InfoHash
}

func put(t testing.TB, b *bus.Bus, name string, data []byte) {
	if _, err := b.Objects.Put(context.Background(), jetstream.ObjectMeta{Name: name}, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
}

func startSeeder(t testing.TB, b *bus.Bus, dir string, recycle int) (*Service, func()) {
	s := New(Service{Bus: b, Registry: registry.New(b.Communities), State: &state.Store{KV: b.State}, Logger: slog.New(slog.DiscardHandler),
		Config: Config{ID: "t", DataDir: dir, ListenAddr: "127.0.0.1:0", RecycleAfter: recycle}}, prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	return s, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("seeder: %v", err)
		}
	}
}

func waitSeeding(t testing.TB, s *Service, c, ih string) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, func() bool { return s.Seeding(c) == ih }, fmt.Sprintf("%s to seed %s", c, ih))
}

// seederHeapMB sums live heap allocated from the torrent client's and the
// seeder's code, leaving out the in-process NATS server and the producer.
func seederHeapMB() float64 {
	runtime.GC()
	runtime.GC()
	var buf bytes.Buffer
	pprof.Lookup("heap").WriteTo(&buf, 1)
	var total int64
	var cur int64
	for _, line := range strings.Split(buf.String(), "\n") {
		switch {
		case strings.Contains(line, ": ") && strings.Contains(line, " @ "):
			// "<inuse objects>: <inuse bytes> [<alloc objects>: <alloc bytes>] @ ..."
			f := strings.Fields(line)
			cur, _ = strconv.ParseInt(f[1], 10, 64)
		case strings.HasPrefix(line, "#") && cur > 0:
			if strings.Contains(line, "anacrolix/") || strings.Contains(line, "internal/seed.") {
				total += cur
				cur = 0
			}
		case line == "":
			cur = 0
		}
	}
	return float64(total) / (1 << 20)
}

// TestReplacementsAndRestart replaces a community's torrent many times and
// checks what the seeder keeps in memory stays flat when it recycles its
// client (anacrolix v1.61 keeps dropped torrents until the client closes),
// then restarts the seeder on the same folder and checks it seeds the newest
// torrent again without fetching or rebuilding anything.
func TestReplacementsAndRestart(t *testing.T) {
	runtime.MemProfileRate = 4096
	defer func() { runtime.MemProfileRate = 512 * 1024 }()
	n := 200
	if testing.Short() {
		n = 100
	}
	for _, tc := range []struct {
		name    string
		recycle int
	}{
		{"never recycled", -1},
		{"recycled every 50 drops", 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
			com := fixture.Community(time.Minute, 0, archive.Topic{9, 9, 9, 9})
			if err := registry.New(b.Communities).Put(context.Background(), com); err != nil {
				t.Fatal(err)
			}
			p := &producer{t: t, b: b, com: com, l: archive.Layout{DataDir: t.TempDir(), TorrentDir: t.TempDir()}, start: 1_700_000_000}
			dir := t.TempDir()
			s, stop := startSeeder(t, b, dir, tc.recycle)
			c := com.ID.String()
			var base float64
			var goroutines int
			var ih string
			for i := 0; i < n; i++ {
				ih = p.next(i)
				waitSeeding(t, s, c, ih)
				if i == 60 {
					base, goroutines = seederHeapMB(), runtime.NumGoroutine()
				}
			}
			grown := seederHeapMB() - base
			moreG := runtime.NumGoroutine() - goroutines
			t.Logf("seeder heap after %d replacements: %+.2f MiB since replacement 60 (%.2f KiB each); goroutines %+d", n, grown, grown*1024/float64(n-60), moreG)
			if grown > 4 || moreG > 20 {
				t.Fatalf("seeder heap grew %.1f MiB and goroutines %+d over %d replacements", grown, moreG, n-60)
			}
			// Each archive was fetched once: data only grows, so the seeder
			// takes only what its verified prefix lacks.
			if got := testutil.ToFloat64(s.metrics.fetched); got != float64(p.st.DataBytes) {
				t.Fatalf("fetched %v bytes for %d bytes of data", got, p.st.DataBytes)
			}
			if got := testutil.ToFloat64(s.metrics.replaced); got != float64(n-1) {
				t.Fatalf("replaced %v torrents, want %d", got, n-1)
			}
			stop()

			s2, stop2 := startSeeder(t, b, dir, tc.recycle)
			defer stop2()
			waitSeeding(t, s2, c, ih)
			if f := testutil.ToFloat64(s2.metrics.fetched); f != 0 {
				t.Fatalf("restart fetched %v bytes; want it to seed from its verified files", f)
			}
		})
	}
}
