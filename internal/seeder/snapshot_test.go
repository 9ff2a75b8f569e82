package seeder

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

func startSeederConfig(t testing.TB, b *bus.Bus, cfg Config) (*Service, func()) {
	cfg.ID, cfg.ListenAddr = "t", "127.0.0.1:0"
	s := New(Service{Bus: b, Registry: registry.New(b.Communities), State: &state.Store{KV: b.State}, Logger: slog.New(slog.DiscardHandler),
		Config: cfg}, prometheus.NewRegistry())
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

// build is one committed build of the test community: its magnet and the
// messages a member reads from its folder.
type build struct {
	ih, magnet string
	msgs       []archive.Message
}

func (p *producer) build(t *testing.T, i int) build {
	ih := p.next(i)
	msgs, _, err := fixture.ReadFolder(p.l.ArchiveDir(p.com.ID), nil)
	if err != nil {
		t.Fatal(err)
	}
	return build{ih: ih, magnet: p.st.Magnet, msgs: msgs}
}

// download fetches b's magnet from seeder s (its only peer, as x.pe) with a
// fresh client and checks a member reads b's messages from it.
func download(t *testing.T, s *Service, b build) {
	t.Helper()
	dir := t.TempDir()
	tt := testenv.Download(t, dir, fmt.Sprintf("%s&x.pe=127.0.0.1:%d", b.magnet, s.LocalPort()), 30*time.Second)
	if got := tt.InfoHash().HexString(); got != b.ih {
		t.Fatalf("downloaded %s, want %s", got, b.ih)
	}
	msgs, _, err := fixture.ReadFolder(filepath.Join(dir, tt.Name()), nil)
	if err != nil {
		t.Fatalf("downloaded folder of %s: %v", b.ih, err)
	}
	if len(msgs) == 0 || !reflect.DeepEqual(msgs, b.msgs) {
		t.Fatalf("downloaded folder of %s has %d messages, want the build's %d", b.ih, len(msgs), len(b.msgs))
	}
}

// notServed checks a fresh client gets no metadata for b's magnet from s.
func notServed(t *testing.T, s *Service, b build) {
	t.Helper()
	cl := testenv.TorrentClient(t, t.TempDir(), false)
	tt, err := cl.AddMagnet(fmt.Sprintf("%s&x.pe=127.0.0.1:%d", b.magnet, s.LocalPort()))
	if err != nil {
		t.Fatal(err)
	}
	defer tt.Drop()
	select {
	case <-tt.GotInfo():
		t.Fatalf("superseded torrent %s still served", b.ih)
	case <-time.After(5 * time.Second):
	}
}

func waitSnapshots(t *testing.T, s *Service, c string, want ...string) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, func() bool { return slices.Equal(s.Snapshots(c), want) },
		fmt.Sprintf("snapshots of %s to be %v", c, want))
}

func snapshotDirs(t *testing.T, dir, c string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, snapshotsDir, c))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func newProducer(t *testing.T) (*bus.Bus, *producer) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	com := fixture.Community(time.Minute, 0, archive.Topic{9, 9, 9, 9})
	if err := registry.New(b.Communities).Put(context.Background(), com); err != nil {
		t.Fatal(err)
	}
	return b, &producer{t: t, b: b, com: com, l: archive.Layout{DataDir: t.TempDir(), TorrentDir: t.TempDir()}, start: 1_700_000_000}
}

// TestSupersededServed checks a superseded magnet keeps downloading the
// superseded build (its index, the prefix of the data that grew since) from
// the seeder within its grace, after a restart too, while the current
// magnet works; and that only SnapshotMax superseded torrents are kept.
func TestSupersededServed(t *testing.T) {
	b, p := newProducer(t)
	c := p.com.ID.String()
	dir := t.TempDir()
	cfg := Config{DataDir: dir, SnapshotGrace: time.Hour, SnapshotMax: 2}
	s, stop := startSeederConfig(t, b, cfg)
	v1 := p.build(t, 0)
	waitSeeding(t, s, c, v1.ih)
	download(t, s, v1)
	if got := s.Snapshots(c); len(got) != 0 {
		t.Fatalf("snapshots before any replacement: %v", got)
	}

	v2 := p.build(t, 1)
	waitSeeding(t, s, c, v2.ih)
	waitSnapshots(t, s, c, v1.ih)
	if len(v2.msgs) <= len(v1.msgs) {
		t.Fatalf("v2 has %d messages, v1 %d", len(v2.msgs), len(v1.msgs))
	}
	download(t, s, v1)
	download(t, s, v2)
	if n := testutil.ToFloat64(s.metrics.snapUploaded); n <= 0 {
		t.Fatalf("snapshot upload bytes %v after serving one", n)
	}
	if n := testutil.ToFloat64(s.metrics.snapshots); n != 1 {
		t.Fatalf("snapshots gauge %v, want 1", n)
	}
	// Nothing but the index was copied.
	ix, _ := os.ReadFile(filepath.Join(dir, snapshotsDir, c, v1.ih, archive.IndexFile))
	if len(ix) == 0 {
		t.Fatal("snapshot has no index")
	}
	if _, err := os.Stat(filepath.Join(dir, snapshotsDir, c, v1.ih, archive.DataFile)); !os.IsNotExist(err) {
		t.Fatalf("snapshot has a data file (%v)", err)
	}
	stop()

	// A restart within the grace serves v1 again, fetching nothing.
	s, stop = startSeederConfig(t, b, cfg)
	defer func() { stop() }()
	waitSeeding(t, s, c, v2.ih)
	waitSnapshots(t, s, c, v1.ih)
	if f := testutil.ToFloat64(s.metrics.fetched); f != 0 {
		t.Fatalf("restart fetched %v bytes", f)
	}
	download(t, s, v1)

	// Bounded by count: two more builds leave v2 and v3.
	v3 := p.build(t, 2)
	waitSeeding(t, s, c, v3.ih)
	waitSnapshots(t, s, c, v1.ih, v2.ih)
	v4 := p.build(t, 3)
	waitSeeding(t, s, c, v4.ih)
	waitSnapshots(t, s, c, v2.ih, v3.ih)
	if got := snapshotDirs(t, dir, c); !slices.Equal(got, []string{v2.ih, v3.ih}) && !slices.Equal(got, []string{v3.ih, v2.ih}) {
		t.Fatalf("snapshot folders %v, want %s and %s", got, v2.ih, v3.ih)
	}
	if n := testutil.ToFloat64(s.metrics.expired); n != 1 {
		t.Fatalf("expired %v, want 1", n)
	}
	download(t, s, v2)
	download(t, s, v4)
	notServed(t, s, v1)
}

// TestSupersededExpires checks a superseded torrent stops being served, and
// its files go, once its grace is over, and does not come back on restart.
func TestSupersededExpires(t *testing.T) {
	b, p := newProducer(t)
	c := p.com.ID.String()
	dir := t.TempDir()
	cfg := Config{DataDir: dir, SnapshotGrace: 2 * time.Second}
	s, stop := startSeederConfig(t, b, cfg)
	defer func() { stop() }()
	v1 := p.build(t, 0)
	waitSeeding(t, s, c, v1.ih)
	v2 := p.build(t, 1)
	waitSeeding(t, s, c, v2.ih)
	if got := s.Snapshots(c); !slices.Equal(got, []string{v1.ih}) {
		t.Fatalf("snapshots right after the replacement: %v", got)
	}
	waitSnapshots(t, s, c)
	if got := snapshotDirs(t, dir, c); len(got) != 0 {
		t.Fatalf("snapshot folders left after the grace: %v", got)
	}
	if n := testutil.ToFloat64(s.metrics.expired); n != 1 {
		t.Fatalf("expired %v, want 1", n)
	}
	notServed(t, s, v1)
	download(t, s, v2)
	stop()

	s, stop = startSeederConfig(t, b, cfg)
	waitSeeding(t, s, c, v2.ih)
	if got := s.Snapshots(c); len(got) != 0 {
		t.Fatalf("snapshots after restart: %v", got)
	}
	notServed(t, s, v1)
}

// TestSupersededOff checks a negative grace serves no superseded torrent.
func TestSupersededOff(t *testing.T) {
	b, p := newProducer(t)
	c := p.com.ID.String()
	dir := t.TempDir()
	s, stop := startSeederConfig(t, b, Config{DataDir: dir, SnapshotGrace: -1})
	defer stop()
	v1 := p.build(t, 0)
	waitSeeding(t, s, c, v1.ih)
	v2 := p.build(t, 1)
	waitSeeding(t, s, c, v2.ih)
	if got := s.Snapshots(c); len(got) != 0 {
		t.Fatalf("snapshots with grace off: %v", got)
	}
	if got := snapshotDirs(t, dir, c); len(got) != 0 {
		t.Fatalf("snapshot folders with grace off: %v", got)
	}
	notServed(t, s, v1)
}

// TestSupersededServedAcrossRecycle checks superseded torrents come back
// when the seeder recycles its torrent client, and their upload counter
// does not go back.
func TestSupersededServedAcrossRecycle(t *testing.T) {
	b, p := newProducer(t)
	c := p.com.ID.String()
	s, stop := startSeederConfig(t, b, Config{DataDir: t.TempDir(), SnapshotGrace: time.Hour, RecycleAfter: 1})
	defer stop()
	v1 := p.build(t, 0)
	waitSeeding(t, s, c, v1.ih)
	v2 := p.build(t, 1) // drops v1 from the file storage: the client recycles
	waitSeeding(t, s, c, v2.ih)
	waitSnapshots(t, s, c, v1.ih)
	download(t, s, v1)
	up := testutil.ToFloat64(s.metrics.snapUploaded)
	if up <= 0 {
		t.Fatalf("snapshot upload bytes %v after serving one", up)
	}
	v3 := p.build(t, 2)
	waitSeeding(t, s, c, v3.ih)
	waitSnapshots(t, s, c, v1.ih, v2.ih)
	s.mu.Lock()
	dropped := s.dropped
	s.mu.Unlock()
	if dropped != 0 {
		t.Fatalf("%d dropped torrents since the client started: it did not recycle", dropped)
	}
	if n := testutil.ToFloat64(s.metrics.snapUploaded); n < up {
		t.Fatalf("snapshot upload bytes went from %v to %v over a recycle", up, n)
	}
	download(t, s, v1)
	download(t, s, v2)
	download(t, s, v3)
}

// TestSupersededDamagedNotServed checks a restart does not serve a
// snapshot whose index no longer matches its torrent, and removes it.
func TestSupersededDamagedNotServed(t *testing.T) {
	b, p := newProducer(t)
	c := p.com.ID.String()
	dir := t.TempDir()
	cfg := Config{DataDir: dir, SnapshotGrace: time.Hour}
	s, stop := startSeederConfig(t, b, cfg)
	v1 := p.build(t, 0)
	waitSeeding(t, s, c, v1.ih)
	v2 := p.build(t, 1)
	waitSeeding(t, s, c, v2.ih)
	waitSnapshots(t, s, c, v1.ih)
	stop()
	path := filepath.Join(dir, snapshotsDir, c, v1.ih, archive.IndexFile)
	ix, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ix[len(ix)/2] ^= 1
	if err := os.WriteFile(path, ix, 0o600); err != nil {
		t.Fatal(err)
	}
	s, stop = startSeederConfig(t, b, cfg)
	defer stop()
	waitSeeding(t, s, c, v2.ih)
	if got := s.Snapshots(c); len(got) != 0 {
		t.Fatalf("damaged snapshot served: %v", got)
	}
	if got := snapshotDirs(t, dir, c); len(got) != 0 {
		t.Fatalf("damaged snapshot left: %v", got)
	}
}
