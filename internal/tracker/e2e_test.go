package tracker

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/archivefleet/archivefleet/internal/testenv"
)

// btClient is an anacrolix client on 127.0.0.1 that finds peers only
// through trackers: no DHT, no PEX, no port forwarding, no IPv6.
func btClient(t *testing.T, dir string, seed bool) *torrent.Client {
	t.Helper()
	return testenv.TorrentClient(t, dir, seed, func(cfg *torrent.ClientConfig) {
		cfg.DisablePEX, cfg.DisableTrackers = true, false
		cfg.Slogger = slog.New(slog.DiscardHandler)
	})
}

// seeded is a torrent an anacrolix client seeds, found through one tracker.
type seeded struct {
	infoHash metainfo.Hash
	name     string
	data     []byte
	magnet   string // xt and tr only: no x.pe, no other tracker
}

// seedThrough seeds 3 MiB of random bytes with announceURL as the only
// tracker, registered as a fleet seeder (so the tracker serves it), and
// waits until the tracker lists the seeder's own announce as a seeder's.
func seedThrough(t *testing.T, tt *testTracker, announceURL string) seeded {
	t.Helper()
	dir := t.TempDir()
	s := seeded{name: "payload.bin", data: make([]byte, 3<<20+12345)}
	crand.Read(s.data)
	if err := os.WriteFile(filepath.Join(dir, s.name), s.data, 0o644); err != nil {
		t.Fatal(err)
	}
	info := metainfo.Info{PieceLength: 256 << 10}
	if err := info.BuildFromFilePath(filepath.Join(dir, s.name)); err != nil {
		t.Fatal(err)
	}
	mi := &metainfo.MetaInfo{}
	var err error
	if mi.InfoBytes, err = bencode.Marshal(info); err != nil {
		t.Fatal(err)
	}
	cl := btClient(t, dir, true)
	tor, err := cl.AddTorrent(mi) // no trackers yet: announce once verified, as a seeder
	if err != nil {
		t.Fatal(err)
	}
	if err := tor.VerifyData(); err != nil {
		t.Fatal(err)
	}
	// The last piece states settle just after VerifyData returns.
	testenv.Eventually(t, 20*time.Second, func() bool { return tor.Complete().Bool() }, "the seeder's data to be complete after verification")
	s.infoHash = mi.HashInfoBytes()
	s.magnet = "magnet:?xt=urn:btih:" + s.infoHash.HexString() + "&tr=" + url.QueryEscape(announceURL)
	self := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(cl.LocalPort()))
	registerSeeder(t, tt.Tracker, s.infoHash, "e2e", self)
	tor.AddTrackers([][]string{{announceURL}})
	waitView(t, tt.Tracker, "listing the seeder's announce through "+announceURL, func(v *view) bool {
		e := liveEntry(v, s.infoHash, addrID(self))
		return e != nil && e.seeder
	})
	// The bucket has both, as one peer.
	peers, err := tt.reg.Peers(context.Background(), s.infoHash)
	if err != nil || len(peers) != 1 || peers[0].Addr != self || !peers[0].Seeder {
		t.Fatalf("registry has %+v, %v; want the seeder %v once", peers, err, self)
	}
	return s
}

// TestAnacrolixDownloadsThroughTracker: one anacrolix client seeds, another
// given only a magnet naming our tracker (no x.pe, no DHT, no PEX) must
// download the torrent from the peers the tracker gave it, over HTTP and
// over UDP.
func TestAnacrolixDownloadsThroughTracker(t *testing.T) {
	tt := newTestTracker(t, Config{})
	for _, tc := range []struct{ transport, url string }{{"http", tt.announce}, {"udp", tt.udp}} {
		t.Run(tc.transport, func(t *testing.T) {
			s := seedThrough(t, tt, tc.url)
			dir := t.TempDir()
			tor, err := btClient(t, dir, false).AddMagnet(s.magnet)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			sources := map[torrent.PeerSource]int{}
			see := func() {
				for _, pc := range tor.PeerConns() {
					sources[pc.Discovery]++
				}
			}
			select {
			case <-tor.GotInfo():
			case <-ctx.Done():
				t.Fatalf("no metadata within 60 s (known swarm %v)", tor.KnownSwarm())
			}
			tor.DownloadAll()
			for !tor.Complete().Bool() {
				see()
				select {
				case <-ctx.Done():
					st := tor.Stats()
					t.Fatalf("download incomplete: %d of %d bytes (%d active peers, known swarm %v)", tor.BytesCompleted(), tor.Length(), st.ActivePeers, tor.KnownSwarm())
				case <-time.After(20 * time.Millisecond):
				}
			}
			see()
			got, err := os.ReadFile(filepath.Join(dir, s.name))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, s.data) {
				t.Fatal("downloaded bytes differ from the seeded ones")
			}
			if len(sources) != 1 || sources[torrent.PeerSourceTracker] == 0 {
				t.Fatalf("peer connections by source %v, want only the tracker's (%q)", sources, torrent.PeerSourceTracker)
			}
		})
	}
}

// TestAria2cDownloadsThroughTracker: aria2c, given a magnet naming only our
// tracker, with PEX and local peer discovery off, downloads from the
// anacrolix seeder the tracker names, over HTTP and over UDP.
//
// aria2c speaks UDP trackers only through its DHT socket ("udp is not
// supported yet" with DHT off), so the UDP run turns DHT on with no entry
// point and an empty routing table: it finds nobody there.
func TestAria2cDownloadsThroughTracker(t *testing.T) {
	tt := newTestTracker(t, Config{})
	for _, tc := range []struct {
		transport, url string
		dht            bool
	}{{"http", tt.announce, false}, {"udp", tt.udp, true}} {
		t.Run(tc.transport, func(t *testing.T) {
			s := seedThrough(t, tt, tc.url)
			before := testutilCount(tt, tc.transport, "started")
			out := t.TempDir()
			testenv.Aria2cDownload(t, s.magnet, out, tc.dht, 90*time.Second)
			got, err := os.ReadFile(filepath.Join(out, s.name))
			if err != nil {
				t.Fatalf("aria2c exited 0 but: %v", err)
			}
			if !bytes.Equal(got, s.data) {
				t.Fatal("aria2c's bytes differ from the seeded ones")
			}
			// One for the metadata (a magnet), one for the files.
			if n := testutilCount(tt, tc.transport, "started") - before; n < 1 {
				t.Fatalf("no started announce from aria2c over %s", tc.transport)
			}
		})
	}
}

func testutilCount(tt *testTracker, transport, event string) float64 {
	return testutil.ToFloat64(tt.metrics.announces.WithLabelValues(transport, event, "ok"))
}
