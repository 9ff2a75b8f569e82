package tracker

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	anacrolixTracker "github.com/anacrolix/torrent/tracker"
	"github.com/anacrolix/torrent/types/infohash"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func udpConnect(tid uint32) []byte {
	b := binary.BigEndian.AppendUint64(nil, udpProtocolID)
	b = binary.BigEndian.AppendUint32(b, actionConnect)
	return binary.BigEndian.AppendUint32(b, tid)
}

// udpAnnounce is a BEP 15 announce (98 bytes, plus extra).
func udpAnnounce(conn uint64, tid uint32, ih [20]byte, peerID string, left int64, ev event, numWant int32, port uint16, extra ...byte) []byte {
	be := binary.BigEndian
	b := be.AppendUint64(nil, conn)
	b = be.AppendUint32(b, actionAnnounce)
	b = be.AppendUint32(b, tid)
	b = append(b, ih[:]...)
	b = append(b, fmt.Sprintf("%-20s", peerID)...)
	b = be.AppendUint64(b, 0) // downloaded
	b = be.AppendUint64(b, uint64(left))
	b = be.AppendUint64(b, 0) // uploaded
	b = be.AppendUint32(b, uint32(ev))
	b = be.AppendUint32(b, 0) // ip
	b = be.AppendUint32(b, 0) // key
	b = be.AppendUint32(b, uint32(numWant))
	b = be.AppendUint16(b, port)
	return append(b, extra...)
}

// udpScrape is a BEP 15 scrape of hashes.
func udpScrape(conn uint64, tid uint32, hashes ...[20]byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, conn)
	b = binary.BigEndian.AppendUint32(b, actionScrape)
	b = binary.BigEndian.AppendUint32(b, tid)
	for _, ih := range hashes {
		b = append(b, ih[:]...)
	}
	return b
}

// distinct is n different infohashes.
func distinct(n int) [][20]byte {
	out := make([][20]byte, n)
	for i := range out {
		out[i] = [20]byte{0xd1, byte(i >> 8), byte(i)}
	}
	return out
}

// TestHandleUDP walks BEP 15's exchanges packet by packet.
func TestHandleUDP(t *testing.T) {
	ctx := context.Background()
	tr := startTracker(t, NewRegistry(testBus(t)), Config{})
	src4, src6 := netip.MustParseAddrPort("192.0.2.1:4000"), netip.MustParseAddrPort("[2001:db8::1]:4000")
	id4, id6 := tr.connectionID(src4, time.Now(), 0), tr.connectionID(src6, time.Now(), 0)
	ih, unknown := [20]byte{5}, [20]byte{6}
	// Two peers already there: the fleet's IPv4 seeder and an IPv6 leecher.
	if err := tr.reg.Register(ctx, ih, "leech-v6", netip.MustParseAddrPort("[2001:db8::99]:6881"), false); err != nil {
		t.Fatal(err)
	}
	registerSeeder(t, tr, ih, "v4", netip.MustParseAddrPort("198.51.100.1:6881"))
	waitView(t, tr, "listing leech-v6", func(v *view) bool { return liveEntry(v, ih, "leech-v6") != nil })
	for _, tc := range []struct {
		name string
		src  netip.AddrPort
		pkt  []byte
		want string // "nil", "error: <msg>", "connect", or "announce <interval> <leechers> <seeders> <peers>"
	}{
		{"short packet: no answer", src4, []byte{1, 2, 3}, "nil"},
		{"connect without the protocol id: no answer", src4, append(binary.BigEndian.AppendUint64(nil, 7), 0, 0, 0, 0, 0, 0, 0, 1), "nil"},
		{"connect", src4, udpConnect(42), "connect"},
		{"announce with a made-up connection id", src4, udpAnnounce(12345, 42, ih, "x", 10, eventStarted, -1, 7000), "error: bad connection id"},
		{"announce with another address's connection id", src4, udpAnnounce(id6, 42, ih, "x", 10, eventStarted, -1, 7000), "error: bad connection id"},
		{"announce cut short", src4, udpAnnounce(id4, 42, ih, "x", 10, eventStarted, -1, 7000)[:90], "error: announce is 90 bytes, want 98"},
		{"announce with port 0", src4, udpAnnounce(id4, 42, ih, "x", 10, eventStarted, -1, 0), "error: bad port 0"},
		{"announce with an unknown event", src4, udpAnnounce(id4, 42, ih, "x", 10, 9, -1, 7000), "error: unknown event 9"},
		{"IPv4 leecher gets IPv4 peers only (BEP 41 options ignored)", src4, udpAnnounce(id4, 42, ih, "v4", 10, eventStarted, -1, 7000, 2, 9, '/', 'a', 'n', 'n', 'o', 'u', 'n', 'c', 'e'),
			"announce 600 2 1 [198.51.100.1:6881]"},
		{"IPv6 leecher gets IPv6 peers only", src6, udpAnnounce(id6, 42, ih, "v6", 10, eventNone, -1, 7000),
			"announce 600 3 1 [[2001:db8::99]:6881]"},
		{"numwant 0", src6, udpAnnounce(id6, 42, ih, "v6", 10, eventNone, 0, 7000), "announce 600 3 1 []"},
		{"IPv4 seeder gets the IPv4 leecher, not itself", netip.MustParseAddrPort("198.51.100.1:5000"),
			udpAnnounce(tr.connectionID(netip.MustParseAddrPort("198.51.100.1:5000"), time.Now(), 0), 42, ih, "seed-v4b", 0, eventNone, -1, 6881),
			"announce 600 3 1 [192.0.2.1:7000]"},
		{"announce for a torrent the fleet does not seed", src4, udpAnnounce(id4, 42, unknown, "x", 10, eventStarted, -1, 7000),
			"error: Requested download is not authorized for use with this tracker."},
		{"scrape: known, unknown (zeros), repeated", src4, udpScrape(id4, 42, ih, unknown, ih), "scrape [{1 0 3} {0 0 0} {1 0 3}]"},
		{"scrape of 64 distinct", src4, udpScrape(id4, 42, distinct(64)...), "scrape 64 answers"},
		{"scrape of 65 distinct", src4, udpScrape(id4, 42, distinct(65)...), "error: at most 64 distinct info_hash per scrape"},
		{"unknown action", src4, append(binary.BigEndian.AppendUint64(nil, id4), 0, 0, 0, 9, 0, 0, 0, 42), "error: unknown action"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := tr.handleUDP(ctx, tc.src, tc.pkt)
			got := describeUDP(t, out, tc.src.Addr().Is4())
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			if out != nil && binary.BigEndian.Uint32(out[4:8]) != 42 && len(tc.pkt) >= 16 && binary.BigEndian.Uint32(tc.pkt[12:16]) == 42 {
				t.Fatalf("transaction id %x not echoed", out[4:8])
			}
		})
	}
	// The id handed out by connect works; last minute's still does, older
	// ones do not.
	out := tr.handleUDP(ctx, src4, udpConnect(1))
	if id := binary.BigEndian.Uint64(out[8:16]); id != id4 && id != tr.connectionID(src4, time.Now(), 0) {
		t.Fatalf("connect gave %x", id)
	}
	if !tr.validConnectionID(src4, tr.connectionID(src4, time.Now(), 1)) || tr.validConnectionID(src4, tr.connectionID(src4, time.Now(), 2)) {
		t.Fatal("connection ids: want this minute's and the last valid, none older")
	}
}

func describeUDP(t *testing.T, out []byte, v4 bool) string {
	t.Helper()
	if out == nil {
		return "nil"
	}
	be := binary.BigEndian
	switch be.Uint32(out[0:4]) {
	case actionConnect:
		if len(out) != 16 {
			t.Fatalf("connect reply of %d bytes", len(out))
		}
		return "connect"
	case actionError:
		return "error: " + string(out[8:])
	case actionScrape:
		var res []scrapeResult
		for b := out[8:]; len(b) >= 12; b = b[12:] {
			res = append(res, scrapeResult{int(be.Uint32(b[0:4])), int(be.Uint32(b[4:8])), int(be.Uint32(b[8:12]))})
		}
		if len(res) > 3 {
			return fmt.Sprintf("scrape %d answers", len(res))
		}
		return fmt.Sprintf("scrape %v", res)
	case actionAnnounce:
		size := 6
		if !v4 {
			size = 18
		}
		peers := []string{}
		for b := out[20:]; len(b) > 0; b = b[size:] {
			ip, _ := netip.AddrFromSlice(b[:size-2])
			peers = append(peers, netip.AddrPortFrom(ip, be.Uint16(b[size-2:size])).String())
		}
		return fmt.Sprintf("announce %d %d %d %v", be.Uint32(out[8:12]), be.Uint32(out[12:16]), be.Uint32(out[16:20]), peers)
	}
	return fmt.Sprintf("action %d", be.Uint32(out[0:4]))
}

// TestAnacrolixTrackerClient announces and scrapes with anacrolix's own
// tracker clients, over HTTP and UDP.
func TestAnacrolixTrackerClient(t *testing.T) {
	tt := newTestTracker(t, Config{})
	for _, tc := range []struct {
		transport, url string
	}{{"http", tt.announce}, {"udp", tt.udp}} {
		t.Run(tc.transport, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cl, err := anacrolixTracker.NewClient(tc.url, anacrolixTracker.NewClientOpts{})
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ih := infohash.T{byte(len(tc.transport)), 1}
			// The fleet seeds it: its seeder is the "seed" that announces
			// below, one peer at one address.
			registerSeeder(t, tt.Tracker, ih, "seed", netip.MustParseAddrPort("127.0.0.1:2001"))
			announce := func(id string, port uint16, left int64, ev anacrolixTracker.AnnounceEvent) anacrolixTracker.AnnounceResponse {
				t.Helper()
				req := anacrolixTracker.AnnounceRequest{InfoHash: ih, Port: port, Left: left, Event: ev, NumWant: -1}
				copy(req.PeerId[:], fmt.Sprintf("%-20s", id))
				resp, err := cl.Announce(ctx, req, anacrolixTracker.AnnounceOpt{})
				if err != nil {
					t.Fatalf("announce %s: %v", id, err)
				}
				return resp
			}
			peers := func(r anacrolixTracker.AnnounceResponse) (out []string) {
				for _, p := range r.Peers {
					ap, _ := p.ToNetipAddrPort()
					out = append(out, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String())
				}
				slices.Sort(out)
				return out
			}
			announce("seed", 2001, 0, anacrolixTracker.Started)
			announce("leech1", 1001, -1, anacrolixTracker.Started) // a magnet without info yet
			r := announce("leech2", 1002, 100, anacrolixTracker.Started)
			if got := peers(r); fmt.Sprint(got) != "[127.0.0.1:1001 127.0.0.1:2001]" || r.Seeders != 1 || r.Leechers != 2 || r.Interval != 600 {
				t.Fatalf("leech2 got peers %v, %d seeders, %d leechers, interval %d", got, r.Seeders, r.Leechers, r.Interval)
			}
			announce("leech1", 1001, 0, anacrolixTracker.Stopped)
			sr, err := cl.Scrape(ctx, []infohash.T{ih, {0xee}})
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprintf("%+v", sr) != "[{Seeders:1 Completed:0 Leechers:1} {Seeders:0 Completed:0 Leechers:0}]" {
				t.Fatalf("scrape %+v", sr)
			}
			if n := testutil.ToFloat64(tt.metrics.announces.WithLabelValues(tc.transport, "started", "ok")); n != 3 {
				t.Fatalf("%s started announces %v, want 3", tc.transport, n)
			}
			if n := testutil.ToFloat64(tt.metrics.scrapes.WithLabelValues(tc.transport, "ok")); n != 1 {
				t.Fatalf("%s scrapes %v, want 1", tc.transport, n)
			}
		})
	}
}
