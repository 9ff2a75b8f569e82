package tracker

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	anacrolixTracker "github.com/anacrolix/torrent/tracker"
	"github.com/anacrolix/torrent/types/infohash"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const refusal = "Requested download is not authorized for use with this tracker."

// bucketValues is how many messages the tracker's bucket holds.
func bucketValues(t *testing.T, tr *Tracker) uint64 {
	t.Helper()
	st, err := tr.reg.kv.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Values()
}

// localAnnounce announces peer 127.0.0.1:port for ih straight to tr, as its
// HTTP handler would.
func localAnnounce(t *testing.T, tr *Tracker, ih [20]byte, port uint16, left int64, ev event) (announceResponse, error) {
	t.Helper()
	return tr.announce(context.Background(), "http", announceRequest{InfoHash: ih, Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port),
		Left: left, Event: ev, NumWant: -1, Compact: true})
}

// TestWhitelist: the tracker answers only for torrents a fleet seeder is
// registered for. Over HTTP and UDP, with anacrolix's tracker clients, an
// announce for another torrent gets opentracker's refusal and stores
// nothing; a seeder's registration opens the torrent, its removal closes
// it again.
func TestWhitelist(t *testing.T) {
	tt := newTestTracker(t, Config{})
	for i, tc := range []struct{ transport, url string }{{"http", tt.announce}, {"udp", tt.udp}} {
		t.Run(tc.transport, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cl, err := anacrolixTracker.NewClient(tc.url, anacrolixTracker.NewClientOpts{})
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ih := infohash.T{0xa1, byte(i)}
			announce := func(port uint16, ev anacrolixTracker.AnnounceEvent) (anacrolixTracker.AnnounceResponse, error) {
				req := anacrolixTracker.AnnounceRequest{InfoHash: ih, Port: port, Left: 100, Event: ev, NumWant: -1}
				copy(req.PeerId[:], fmt.Sprintf("%-20d", port))
				return cl.Announce(ctx, req, anacrolixTracker.AnnounceOpt{})
			}
			refused := func(what string, port uint16, ev anacrolixTracker.AnnounceEvent) {
				t.Helper()
				before := bucketValues(t, tt.Tracker)
				r, err := announce(port, ev)
				if err == nil || !strings.Contains(err.Error(), refusal) {
					t.Fatalf("%s: announce answered %+v, %v; want the refusal %q", what, r, err, refusal)
				}
				if after := bucketValues(t, tt.Tracker); after != before {
					t.Fatalf("%s: the bucket went from %d to %d messages", what, before, after)
				}
			}
			refused("unknown torrent", 5000, anacrolixTracker.Started)
			refused("unknown torrent, stopped", 5000, anacrolixTracker.Stopped)
			if n := testutil.ToFloat64(tt.metrics.announces.WithLabelValues(tc.transport, "started", "unregistered")); n != 1 {
				t.Fatalf("unregistered started announces %v, want 1", n)
			}

			seeder := netip.MustParseAddrPort("192.0.2.10:6881")
			registerSeeder(t, tt.Tracker, ih, "w", seeder)
			r, err := announce(5000, anacrolixTracker.Started)
			if err != nil || len(r.Peers) != 1 || r.Seeders != 1 || r.Leechers != 1 {
				t.Fatalf("with a fleet seeder registered: %+v, %v; want the seeder and counts 1/1", r, err)
			}
			if p, _ := r.Peers[0].ToNetipAddrPort(); p != seeder {
				t.Fatalf("peer %v, want the fleet seeder %v", p, seeder)
			}

			// The seeder leaves (its torrent no longer served): refused
			// again, though a peer is still stored.
			if err := tt.reg.Remove(ctx, ih, SeederIDPrefix+"w"); err != nil {
				t.Fatal(err)
			}
			waitView(t, tt.Tracker, "closing the torrent", func(v *view) bool { return v.allowed(ih) == nil })
			refused("after the seeder left", 5001, anacrolixTracker.Started)
		})
	}
}

// TestScrape: a scrape answers each distinct torrent once from its counts,
// leaves out torrents the fleet does not seed (HTTP; UDP's zeros are in
// TestHandleUDP), and refuses more than 64 distinct torrents.
func TestScrape(t *testing.T) {
	tt := newTestTracker(t, Config{})
	ih := [20]byte{0x5c}
	registerSeeder(t, tt.Tracker, ih, "s", netip.MustParseAddrPort("192.0.2.1:1"))
	for p := range uint16(3) {
		if _, err := localAnnounce(t, tt.Tracker, ih, 7000+p, 10, eventStarted); err != nil {
			t.Fatal(err)
		}
	}
	scrape := func(hashes ...[20]byte) (int, map[string]any) {
		var kv []string
		for _, h := range hashes {
			kv = append(kv, "info_hash", string(h[:]))
		}
		return get(t, strings.TrimSuffix(tt.announce, "/announce")+"/scrape", query(kv...))
	}
	repeat := func(h [20]byte, n int) [][20]byte {
		out := make([][20]byte, n)
		for i := range out {
			out[i] = h
		}
		return out
	}
	known := map[string]any{"complete": int64(1), "downloaded": int64(0), "incomplete": int64(3)}
	for _, tc := range []struct {
		name    string
		hashes  [][20]byte
		files   int // torrents answered
		failure string
	}{
		{"one", [][20]byte{ih}, 1, ""},
		{"the same 64 times: one answer", repeat(ih, 64), 1, ""},
		{"the same 100 times: the cap is on distinct torrents", repeat(ih, 100), 1, ""},
		{"64 distinct, one served: the others left out", append(distinct(63), ih), 1, ""},
		{"only unknown torrents: no files", distinct(5), 0, ""},
		{"65 distinct: refused", append(distinct(64), ih), 0, "at most 64 distinct info_hash per scrape"},
		{"none: a full scrape is not served", nil, 0, "scrape needs info_hash: a full scrape is not served"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, m := scrape(tc.hashes...)
			if status != 200 {
				t.Fatalf("status %d: %v", status, m)
			}
			if tc.failure != "" {
				if m["failure reason"] != tc.failure {
					t.Fatalf("reply %v, want failure %q", m, tc.failure)
				}
				return
			}
			files, ok := m["files"].(map[string]any)
			if !ok || len(files) != tc.files {
				t.Fatalf("reply %v, want %d files", m, tc.files)
			}
			if tc.files == 1 && fmt.Sprint(files[string(ih[:])]) != fmt.Sprint(known) {
				t.Fatalf("counts %v, want %v", files[string(ih[:])], known)
			}
		})
	}
}

// TestCaps: announced peers beyond a torrent's cap, or beyond the tracker's,
// get peers but are not stored; fleet seeders' registrations always are.
func TestCaps(t *testing.T) {
	tt := newTestTracker(t, Config{MaxSwarmPeers: 5, MaxPeers: 8})
	a, b := [20]byte{0xa}, [20]byte{0xb}
	registerSeeder(t, tt.Tracker, a, "1", netip.MustParseAddrPort("192.0.2.1:1"))
	registerSeeder(t, tt.Tracker, b, "1", netip.MustParseAddrPort("192.0.2.1:1"))
	stored := func(ih [20]byte) (announced, fleet int) {
		ks, err := tt.reg.kv.ListKeysFiltered(context.Background(), fmt.Sprintf("%x.*", ih))
		if err != nil {
			t.Fatal(err)
		}
		for k := range ks.Keys() {
			if _, id, _ := parseKey(k); strings.HasPrefix(id, SeederIDPrefix) {
				fleet++
			} else {
				announced++
			}
		}
		return announced, fleet
	}
	for _, tc := range []struct {
		name          string
		ih            [20]byte
		ports         []uint16
		seeders       int // fleet seeders registered after the announces
		wantAnnounced int
		wantFleet     int
		reason        string
		notStored     float64
	}{
		{"a: 8 peers, cap 5 per torrent", a, []uint16{1, 2, 3, 4, 5, 6, 7, 8}, 2, 5, 3, "swarm_full", 3},
		{"b: 5 peers, 3 left under the tracker's cap of 8", b, []uint16{1, 2, 3, 4, 5}, 0, 3, 1, "tracker_full", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i, p := range tc.ports {
				r, err := localAnnounce(t, tt.Tracker, tc.ih, 9000+p, 10, eventStarted)
				if err != nil {
					t.Fatalf("peer %d: %v", i, err)
				}
				// Every peer is answered: the fleet's seeder and the
				// stored peers (all but itself, if it was stored).
				if len(r.Peers) == 0 || r.Peers[0] != netip.MustParseAddrPort("192.0.2.1:1") {
					t.Fatalf("peer %d got %v, want the fleet seeder first", i, r.Peers)
				}
			}
			for i := range tc.seeders {
				registerSeeder(t, tt.Tracker, tc.ih, fmt.Sprint("more", i), netip.AddrPortFrom(netip.MustParseAddr("192.0.2.2"), uint16(i+1)))
			}
			if an, fl := stored(tc.ih); an != tc.wantAnnounced || fl != tc.wantFleet {
				t.Fatalf("bucket holds %d announced peers and %d fleet seeders, want %d and %d", an, fl, tc.wantAnnounced, tc.wantFleet)
			}
			if n := testutil.ToFloat64(tt.metrics.notStored.WithLabelValues(tc.reason)); n != tc.notStored {
				t.Fatalf("not stored (%s) %v, want %v", tc.reason, n, tc.notStored)
			}
		})
	}
	// A stopped peer's deletion marker takes room in the bucket until it
	// expires, so it still counts: a new peer of a is not stored.
	if _, err := localAnnounce(t, tt.Tracker, a, 9001, 10, eventStopped); err != nil {
		t.Fatal(err)
	}
	if _, err := localAnnounce(t, tt.Tracker, a, 9100, 10, eventStarted); err != nil {
		t.Fatal(err)
	}
	if an, _ := stored(a); an != 4 {
		t.Fatalf("a holds %d announced peers after one stopped and a new one came, want 4", an)
	}
}

// TestRewrites: a peer announcing again unchanged within the min interval
// is not written again; a change, or the interval passed, is.
func TestRewrites(t *testing.T) {
	tt := newTestTracker(t, Config{})
	ih := [20]byte{0xe}
	registerSeeder(t, tt.Tracker, ih, "s", netip.MustParseAddrPort("192.0.2.1:1"))
	key := peerKey(ih, addrID(netip.MustParseAddrPort("127.0.0.1:7000")))
	var last uint64
	for _, tc := range []struct {
		name    string
		left    int64
		later   time.Duration // the tracker's clock moved on by
		written bool
	}{
		{"new", 10, 0, true},
		{"again at once: skipped", 10, 0, false},
		{"again: skipped", 10, 0, false},
		{"completed: written", 0, 0, true},
		{"again as a seeder: skipped", 0, 0, false},
		{"a min interval later: written", 0, time.Minute, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tt.view.mu.Lock()
			tt.view.now = func() time.Time { return time.Now().Add(tc.later) }
			tt.view.mu.Unlock()
			if _, err := localAnnounce(t, tt.Tracker, ih, 7000, tc.left, eventNone); err != nil {
				t.Fatal(err)
			}
			e, err := tt.reg.kv.Get(context.Background(), key)
			if err != nil {
				t.Fatal(err)
			}
			if written := e.Revision() != last; written != tc.written {
				t.Fatalf("written %v (revision %d, was %d), want %v", written, e.Revision(), last, tc.written)
			}
			last = e.Revision()
		})
	}
	if n := testutil.ToFloat64(tt.metrics.skipped); n != 3 {
		t.Fatalf("skipped rewrites %v, want 3", n)
	}
}

// TestBucketFull: when the bucket refuses a write for its MaxBytes, the
// announce is still answered; the peer is counted as not stored.
func TestBucketFull(t *testing.T) {
	b := testBus(t)
	kv, err := b.JS.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: "tracker-peers-small", History: 1,
		TTL: time.Hour, MaxBytes: 2048, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	tr := startTracker(t, newRegistry(b.NC, kv), Config{})
	ih := [20]byte{0xf}
	registerSeeder(t, tr, ih, "s", netip.MustParseAddrPort("192.0.2.1:1"))
	for p := range uint16(40) {
		r, err := localAnnounce(t, tr, ih, 8000+p, 10, eventStarted)
		if err != nil || len(r.Peers) == 0 {
			t.Fatalf("peer %d: %+v, %v; want an answer", p, r, err)
		}
	}
	if n := testutil.ToFloat64(tr.metrics.notStored.WithLabelValues("bucket_full")); n == 0 {
		t.Fatal("40 peers fit a 2 KiB bucket?")
	}
}

// TestViewExpiresWithBucket: a bucket's TTL drops a key without a marker,
// so the view drops it by itself: the torrent whose seeder stopped
// registering is closed, and its peers gone.
func TestViewExpiresWithBucket(t *testing.T) {
	b := testBus(t)
	kv, err := b.JS.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: "tracker-peers-short", History: 1,
		TTL: 2 * time.Second, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	tr := startTracker(t, newRegistry(b.NC, kv), Config{Interval: time.Second})
	ih := [20]byte{0x77}
	registerSeeder(t, tr, ih, "s", netip.MustParseAddrPort("192.0.2.1:1"))
	if _, err := localAnnounce(t, tr, ih, 7000, 10, eventStarted); err != nil {
		t.Fatal(err)
	}
	waitView(t, tr, "forgetting the expired torrent", func(v *view) bool { return len(v.swarms) == 0 && v.expiry.Len() == 0 })
	if _, err := localAnnounce(t, tr, ih, 7000, 10, eventStarted); err == nil || err.Error() != refusal {
		t.Fatalf("announce after expiry: %v, want the refusal", err)
	}
}

// TestHTTPServerLimits: the tracker's server refuses a request whose
// headers exceed its limit, and has every timeout set.
func TestHTTPServerLimits(t *testing.T) {
	tr := startTracker(t, NewRegistry(testBus(t)), Config{})
	srv := tr.HTTPServer()
	if srv.ReadHeaderTimeout == 0 || srv.ReadTimeout == 0 || srv.WriteTimeout == 0 || srv.IdleTimeout == 0 {
		t.Fatalf("timeouts %v %v %v %v: want all set", srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	u := "http://" + ln.Addr().String() + "/announce"
	for _, tc := range []struct {
		name   string
		header int
		status int
	}{{"small", 100, 200}, {"over the limit", 2 * HTTPMaxHeaderBytes, http.StatusRequestHeaderFieldsTooLarge}} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", u+"?"+query("info_hash", strings.Repeat("q", 20), "peer_id", pid, "port", "1"), nil)
			req.Header.Set("X-Pad", strings.Repeat("a", tc.header))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
		})
	}
}
