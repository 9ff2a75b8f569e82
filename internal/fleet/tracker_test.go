package fleet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/anacrolix/torrent/metainfo"
	anacrolixTracker "github.com/anacrolix/torrent/tracker"
	"github.com/anacrolix/torrent/types/infohash"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/testenv"
	"github.com/archivefleet/archivefleet/internal/tracker"
)

// TestAria2cFetchesAnnouncedMagnet (#12): the fleet serves its tracker and
// puts it first in every torrent; two seeders list themselves there. The
// fleet announces; aria2c (a client nobody here wrote), with DHT, PEX and
// local discovery off and given only the announced magnet (aria2c ignores
// x.pe), downloads the torrent through the tracker, and the folder
// verifies and extracts to the ingested messages. A new build supersedes
// it; aria2c still fetches the old magnet (a member who saw last week's
// link), which extracts to the old messages only. With one seeder killed
// (its swarm entry left behind, as after a crash), aria2c still completes.
func TestAria2cFetchesAnnouncedMagnet(t *testing.T) {
	c := newCluster(t)
	serve, err := tracker.Listen(c.bus(), "127.0.0.1:0", c.logger("tracker"), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	c.run("tracker", serve.Run)
	c.trackerURL = serve.AnnounceURL
	const iv = 3 * time.Second
	now := uint64(time.Now().Unix())
	since := now - 2*uint64(iv/time.Second)
	com := c.register(iv, since)
	st := c.archiver()
	msgs := sampleMessages(com, 80, since, now)
	if res, err := st.Ingest(context.Background(), com.ID, msgs); err != nil || res.Stored != len(msgs) {
		t.Fatalf("ingest: %+v %v", res, err)
	}
	c.scheduler()
	c.announcer()
	// The superseded magnet is fetched right after its replacement, well
	// inside this grace, and tried again once it is over.
	const grace = 30 * time.Second
	keep := newSeeder(c.bus(), SeederConfig{ID: "s1", DataDir: t.TempDir(), Listen: "127.0.0.1:0", SnapshotGrace: grace},
		c.logger("seeder"), prometheus.NewRegistry())
	c.run("seeder", keep.Run)
	sctx, kill := context.WithCancel(c.ctx)
	other := newSeeder(c.bus(), SeederConfig{ID: "s2", DataDir: t.TempDir(), Listen: "127.0.0.1:0", SnapshotGrace: grace},
		c.logger("seeder2"), prometheus.NewRegistry())
	done := make(chan struct{})
	go func() { other.Run(sctx); close(done) }()
	t.Cleanup(func() { kill(); <-done })

	var v = c.waitAnnounced(com, 0, 60*time.Second)
	m, err := metainfo.ParseMagnetUri(v.Magnet)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Trackers) == 0 || m.Trackers[0] != serve.AnnounceURL {
		t.Fatalf("magnet trackers %v: want ours (%s) first", m.Trackers, serve.AnnounceURL)
	}
	// The tracker serves only torrents its seeders registered for: it
	// lists both before aria2c asks.
	waitTrackerSeeders(t, serve.AnnounceURL, m.InfoHash, 2)
	if keep.Seeding(com.ID.String()) != m.InfoHash.HexString() {
		t.Fatal("seeder s1 does not seed the announced torrent")
	}

	fetch := func(what, magnet string, want []archive.Message) {
		out := t.TempDir()
		testenv.Aria2cDownload(t, magnet, out, false, 90*time.Second)
		got, _ := readFolder(t, filepath.Join(out, com.ID.String()), nil)
		if !slices.Equal(hashesOf(got), hashesOf(want)) {
			t.Fatalf("%s: aria2c's folder holds %d messages, want %d", what, len(got), len(want))
		}
	}
	fetch("both seeders", v.Magnet, msgs)

	// A later window's messages: a new build supersedes the magnet.
	// In the first whole window after the clock now, not after the test's
	// start: on a loaded machine that window may already be archived,
	// and the messages would be answered late.
	ivs := uint64(iv / time.Second)
	at := since + ((uint64(time.Now().Unix())-since)/ivs+1)*ivs
	later := sampleMessages(com, 20, at, at+ivs)
	if res, err := st.Ingest(context.Background(), com.ID, later); err != nil || res.Stored != len(later) {
		t.Fatalf("ingest: %+v %v", res, err)
	}
	v2 := c.waitAnnounced(com, v.Clock, 60*time.Second)
	for end := time.Now().Add(30 * time.Second); keep.Seeding(com.ID.String()) == m.InfoHash.HexString(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("seeder s1 never moved to the new build")
		}
	}
	fetch("superseded magnet", v.Magnet, msgs)
	m2, err := metainfo.ParseMagnetUri(v2.Magnet)
	if err != nil {
		t.Fatal(err)
	}
	waitTrackerSeeders(t, serve.AnnounceURL, m2.InfoHash, 1)
	fetch("new magnet", v2.Magnet, append(slices.Clone(msgs), later...))
	kill()
	<-done
	fetch("one seeder killed", v2.Magnet, append(slices.Clone(msgs), later...))

	// After the grace the superseded magnet is no longer served: aria2c,
	// given only it, gets nothing.
	for end := time.Now().Add(2 * grace); len(keep.Snapshots(com.ID.String())) > 0; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("superseded torrent still served %v after its replacement (grace %v)", 2*grace, grace)
		}
	}
	out := t.TempDir()
	if err := testenv.Aria2cTry(t, v.Magnet, out, false, 45*time.Second, 10*time.Second); err == nil {
		t.Fatal("aria2c fetched the superseded magnet after its grace")
	}
	if fi, err := os.Stat(filepath.Join(out, com.ID.String(), archive.DataFile)); err == nil && fi.Size() > 0 {
		t.Fatalf("aria2c wrote %d bytes of the superseded torrent's data after its grace", fi.Size())
	}
}

// waitTrackerSeeders waits up to 30 s until a scrape of the tracker at
// announceURL counts at least n seeders of ih.
func waitTrackerSeeders(t *testing.T, announceURL string, ih metainfo.Hash, n int32) {
	t.Helper()
	cl, err := anacrolixTracker.NewClient(announceURL, anacrolixTracker.NewClientOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	testenv.Eventually(t, 30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		res, err := cl.Scrape(ctx, []infohash.T{ih})
		return err == nil && len(res) == 1 && res[0].Seeders >= n
	}, fmt.Sprintf("the tracker to count %d seeders of %s", n, ih.HexString()))
}
