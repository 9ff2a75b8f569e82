package tracker

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	httpTracker "github.com/anacrolix/torrent/tracker/http"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/archivefleet/archivefleet/internal/testenv"
)

// testTracker is a tracker on a real NATS with an HTTP server and a UDP
// socket on 127.0.0.1.
type testTracker struct {
	*Tracker
	reg      *Registry
	announce string // http://127.0.0.1:port/announce
	udp      string // udp://127.0.0.1:port/announce
}

func newTestTracker(t *testing.T, cfg Config) *testTracker {
	t.Helper()
	r := NewRegistry(testBus(t))
	tr := startTracker(t, r, cfg)
	srv := httptest.NewServer(tr)
	t.Cleanup(srv.Close)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.ServeUDP(ctx, pc) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeUDP: %v", err)
		}
	})
	return &testTracker{Tracker: tr, reg: r, announce: srv.URL + "/announce", udp: "udp://" + pc.LocalAddr().String() + "/announce"}
}

// startTracker returns a tracker on r whose view runs until the test ends,
// once the view has loaded.
func startTracker(t *testing.T, r *Registry, cfg Config) *Tracker {
	t.Helper()
	tr, err := New(r, cfg, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := tr.view.wait(wctx); err != nil {
		t.Fatal(err)
	}
	return tr
}

// waitView waits up to 10 s until cond holds on tr's view.
func waitView(t *testing.T, tr *Tracker, what string, cond func(v *view) bool) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() bool {
		tr.view.mu.Lock()
		defer tr.view.mu.Unlock()
		return cond(tr.view)
	}, "tracker's view: "+what)
}

// liveEntry is ih's entry id in v, if live.
func liveEntry(v *view, ih [20]byte, id string) *entry {
	if sw := v.swarms[ih]; sw != nil {
		if e := sw.entries[id]; e != nil && e.live {
			return e
		}
	}
	return nil
}

// registerSeeder lists fleet seeder id (SeederIDPrefix added) for ih at
// addr, and waits until tr's view has it: tr then serves ih.
func registerSeeder(t *testing.T, tr *Tracker, ih [20]byte, id string, addr netip.AddrPort) {
	t.Helper()
	id = SeederIDPrefix + id
	if err := tr.reg.Register(context.Background(), ih, id, addr, true); err != nil {
		t.Fatal(err)
	}
	waitView(t, tr, fmt.Sprintf("listing %s for %x at %v", id, ih, addr), func(v *view) bool {
		e := liveEntry(v, ih, id)
		return e != nil && e.addr == addr && v.allowed(ih) != nil
	})
}

// ih20 is an infohash with bytes URLs must escape (NUL, ';', '+', '&', '%', '=').
var ih20 = [20]byte{0, ';', '+', '&', '%', '=', ' ', 0xff, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19}

const pid = "-AF0001-abcdefghijkl"

// query builds a raw query from name, value pairs (values escaped).
func query(kv ...string) string {
	var parts []string
	for i := 0; i < len(kv); i += 2 {
		parts = append(parts, kv[i]+"="+url.QueryEscape(kv[i+1]))
	}
	return strings.Join(parts, "&")
}

func TestParseAnnounce(t *testing.T) {
	v4, v6 := netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8::7")
	base := []string{"info_hash", string(ih20[:]), "peer_id", pid, "port", "6881"}
	for _, tc := range []struct {
		name    string
		raw     string
		src     netip.Addr
		trustIP bool
		want    string // announceRequest fields, or "error: <substring>"
	}{
		{"defaults: compact, left unknown, default numwant", query(base...), v4, false,
			"192.0.2.7:6881 none left=-1 numwant=-1 compact=true"},
		{"a seeder starting, compact=0, numwant", query(append(base, "left", "0", "event", "started", "compact", "0", "numwant", "7", "uploaded", "5", "downloaded", "9")...), v4, false,
			"192.0.2.7:6881 started left=0 numwant=7 compact=false"},
		{"completed", query(append(base, "event", "completed", "left", "0")...), v4, false, "192.0.2.7:6881 completed left=0 numwant=-1 compact=true"},
		{"stopped", query(append(base, "event", "stopped", "left", "10")...), v4, false, "192.0.2.7:6881 stopped left=10 numwant=-1 compact=true"},
		{"BEP 21 paused is a regular announce", query(append(base, "event", "paused")...), v4, false, "192.0.2.7:6881 none left=-1 numwant=-1 compact=true"},
		{"compact=1", query(append(base, "compact", "1")...), v4, false, "192.0.2.7:6881 none left=-1 numwant=-1 compact=true"},
		{"negative numwant means default", query(append(base, "numwant", "-5")...), v4, false, "192.0.2.7:6881 none left=-1 numwant=-1 compact=true"},
		{"IPv6 source", query(base...), v6, false, "[2001:db8::7]:6881 none left=-1 numwant=-1 compact=true"},
		{"IPv4-mapped source is IPv4", query(base...), netip.MustParseAddr("::ffff:192.0.2.9"), false, "192.0.2.9:6881 none left=-1 numwant=-1 compact=true"},
		{"ip ignored unless trusted", query(append(base, "ip", "198.51.100.1")...), v4, false, "192.0.2.7:6881 none left=-1 numwant=-1 compact=true"},
		{"trusted ip: first literal (anacrolix sends one per family)", query(append(base, "ip", "host.example", "ip", "198.51.100.1", "ip", "2001:db8::1")...), v4, true,
			"198.51.100.1:6881 none left=-1 numwant=-1 compact=true"},
		{"trusted ip, only a name: source", query(append(base, "ip", "host.example")...), v4, true, "192.0.2.7:6881 none left=-1 numwant=-1 compact=true"},
		{"unescaped ';' in info_hash",
			"info_hash=%00;%2B%26%25%3D%20%FF%08%09%0A%0B%0C%0D%0E%0F%10%11%12%13&peer_id=" + pid + "&port=6881", v4, false,
			"192.0.2.7:6881 none left=-1 numwant=-1 compact=true"},
		{"info_hash of 19 bytes", query("info_hash", string(ih20[:19]), "peer_id", pid, "port", "1"), v4, false, "error: info_hash"},
		{"info_hash of 21 bytes", query("info_hash", string(ih20[:])+"x", "peer_id", pid, "port", "1"), v4, false, "error: info_hash"},
		{"info_hash as 40 hex digits", query("info_hash", strings.Repeat("ab", 20), "peer_id", pid, "port", "1"), v4, false, "error: info_hash"},
		{"no info_hash", query("peer_id", pid, "port", "1"), v4, false, "error: info_hash"},
		{"two info_hash", query("info_hash", string(ih20[:]), "info_hash", string(ih20[:]), "peer_id", pid, "port", "1"), v4, false, "error: info_hash"},
		{"short peer_id", query("info_hash", string(ih20[:]), "peer_id", "abc", "port", "1"), v4, false, "error: peer_id"},
		{"missing port", query("info_hash", string(ih20[:]), "peer_id", pid), v4, false, "error: missing port"},
		{"port 0", query("info_hash", string(ih20[:]), "peer_id", pid, "port", "0"), v4, false, "error: bad port"},
		{"port 70000", query("info_hash", string(ih20[:]), "peer_id", pid, "port", "70000"), v4, false, "error: bad port"},
		{"bad left", query(append(base, "left", "lots")...), v4, false, "error: bad left"},
		{"bad numwant", query(append(base, "numwant", "x")...), v4, false, "error: bad numwant"},
		{"unknown event", query(append(base, "event", "finished")...), v4, false, "error: unknown event"},
		{"bad escape", "info_hash=%zz", v4, false, "error: bad query"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := func() (announceRequest, error) {
				q, err := parseQuery(tc.raw)
				if err != nil {
					return announceRequest{}, err
				}
				return parseAnnounce(q, tc.src, tc.trustIP)
			}()
			var got string
			if err != nil {
				got = "error: " + err.Error()
				if !strings.HasPrefix(got, tc.want) {
					t.Fatalf("got %q, want %q...", got, tc.want)
				}
				return
			}
			got = fmt.Sprintf("%s %s left=%d numwant=%d compact=%v", a.Addr, a.Event, a.Left, a.NumWant, a.Compact)
			if got != tc.want {
				t.Fatalf("got  %q\nwant %q", got, tc.want)
			}
			if a.InfoHash != ih20 || string(a.PeerID[:]) != pid {
				t.Fatalf("info_hash %x peer_id %q", a.InfoHash, a.PeerID)
			}
		})
	}
}

func TestEncodeAnnounce(t *testing.T) {
	peers := []netip.AddrPort{netip.MustParseAddrPort("10.1.2.3:258"), netip.MustParseAddrPort("[2001:db8::1]:1"), netip.MustParseAddrPort("10.0.0.9:6881")}
	for _, tc := range []struct {
		name    string
		resp    announceResponse
		compact bool
		raw     string // exact bencoding, if set
		want4   []string
		want6   []string
	}{
		{name: "empty, compact: peers is an empty string", resp: announceResponse{Interval: 10 * time.Minute, MinInterval: time.Minute}, compact: true,
			raw: "d8:completei0e10:incompletei0e8:intervali600e12:min intervali60e5:peers0:e"},
		{name: "empty, dict: peers is an empty list", resp: announceResponse{Interval: 10 * time.Minute, MinInterval: time.Minute},
			raw: "d8:completei0e10:incompletei0e8:intervali600e12:min intervali60e5:peerslee"},
		{name: "one IPv4 peer, compact", resp: announceResponse{Interval: time.Minute, MinInterval: time.Minute, Complete: 1, Incomplete: 2, Peers: peers[:1]}, compact: true,
			raw:   "d8:completei1e10:incompletei2e8:intervali60e12:min intervali60e5:peers6:\x0a\x01\x02\x03\x01\x02e",
			want4: []string{"10.1.2.3:258"}},
		{name: "IPv4 and IPv6, compact: peers6 (BEP 7)", resp: announceResponse{Interval: time.Minute, Peers: peers}, compact: true,
			want4: []string{"10.1.2.3:258", "10.0.0.9:6881"}, want6: []string{"[2001:db8::1]:1"}},
		{name: "IPv4 and IPv6, dict", resp: announceResponse{Interval: time.Minute, Peers: peers},
			raw:   "d8:completei0e10:incompletei0e8:intervali60e12:min intervali0e5:peersld2:ip8:10.1.2.34:porti258eed2:ip11:2001:db8::14:porti1eed2:ip8:10.0.0.94:porti6881eeee",
			want4: []string{"10.1.2.3:258", "[2001:db8::1]:1", "10.0.0.9:6881"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := bencode.Marshal(encodeAnnounce(tc.resp, tc.compact))
			if err != nil {
				t.Fatal(err)
			}
			if tc.raw != "" && string(b) != tc.raw {
				t.Fatalf("encoded\n%q\nwant\n%q", b, tc.raw)
			}
			// What anacrolix's tracker client reads from it.
			var r httpTracker.HttpResponse
			if err := bencode.Unmarshal(b, &r); err != nil {
				t.Fatal(err)
			}
			if got := int(r.Interval); got != int(tc.resp.Interval.Seconds()) || int(r.Complete) != tc.resp.Complete || int(r.Incomplete) != tc.resp.Incomplete {
				t.Fatalf("decoded %+v", r)
			}
			var got4, got6 []string
			for _, p := range r.Peers.List {
				ap, _ := p.ToNetipAddrPort()
				got4 = append(got4, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String())
			}
			for _, p := range r.Peers6 {
				got6 = append(got6, p.String())
			}
			if fmt.Sprint(got4) != fmt.Sprint(tc.want4) || fmt.Sprint(got6) != fmt.Sprint(tc.want6) {
				t.Fatalf("decoded peers %v peers6 %v, want %v %v", got4, got6, tc.want4, tc.want6)
			}
		})
	}
}

func TestSourceAddr(t *testing.T) {
	tr := &Tracker{cfg: Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}}}
	for _, tc := range []struct {
		name, remote string
		xff          []string
		want         string
	}{
		{"direct client", "192.0.2.1:5555", nil, "192.0.2.1"},
		{"untrusted sender's X-Forwarded-For is ignored", "192.0.2.1:5555", []string{"198.51.100.1"}, "192.0.2.1"},
		{"proxy: the client it names", "10.0.0.2:80", []string{"198.51.100.1"}, "198.51.100.1"},
		{"proxy chain: the nearest untrusted hop, not a forged first one", "10.0.0.2:80", []string{"6.6.6.6, 198.51.100.1", "10.0.0.3"}, "198.51.100.1"},
		{"proxy without header: the proxy", "10.0.0.2:80", nil, "10.0.0.2"},
		{"garbage stops the walk", "10.0.0.2:80", []string{"198.51.100.1, junk, 10.0.0.5"}, "10.0.0.5"},
		{"IPv6 proxy naming an IPv6 client", "[::1]:80", []string{"2001:db8::9"}, "2001:db8::9"},
		{"IPv4-mapped client", "10.0.0.2:80", []string{"::ffff:198.51.100.4"}, "198.51.100.4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/announce", nil)
			r.RemoteAddr = tc.remote
			for _, h := range tc.xff {
				r.Header.Add("X-Forwarded-For", h)
			}
			got, err := tr.sourceAddr(r)
			if err != nil || got.String() != tc.want {
				t.Fatalf("got %v, %v; want %s", got, err, tc.want)
			}
		})
	}
}

// get announces (or scrapes) with a raw query and decodes the reply.
func get(t *testing.T, u, raw string, hdr ...string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("GET", u+"?"+raw, nil)
	for i := 0; i < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := bencode.Unmarshal(b, &m); err != nil {
		t.Fatalf("reply %q: %v", b, err)
	}
	return resp.StatusCode, m
}

// compactPeers reads a compact peer string (6 or 18 bytes each).
func compactPeers(s any, size int) []string {
	b := []byte(s.(string))
	if len(b)%size != 0 {
		return []string{fmt.Sprintf("<%d bytes: not a multiple of %d>", len(b), size)}
	}
	var out []string
	for ; len(b) >= size; b = b[size:] {
		ip, _ := netip.AddrFromSlice(b[:size-2])
		out = append(out, netip.AddrPortFrom(ip, uint16(b[size-2])<<8|uint16(b[size-1])).String())
	}
	return out
}

// checkGroups checks peers against groups: the order of groups is fixed,
// within one it is random (a sample, shuffled so load spreads). n is how
// many peers were asked for: the last group used may be cut to a subset.
func checkGroups(got []string, groups [][]string, n int) error {
	total := 0
	for _, g := range groups {
		total += len(g)
	}
	if len(got) != min(total, n) {
		return fmt.Errorf("%d peers, want %d", len(got), min(total, n))
	}
	rest := got
	for _, g := range groups {
		k := min(len(g), len(rest))
		seg := slices.Sorted(slices.Values(rest[:k]))
		if len(slices.Compact(slices.Clone(seg))) != k {
			return fmt.Errorf("duplicate peers in %v", seg)
		}
		for _, p := range seg {
			if !slices.Contains(g, p) {
				return fmt.Errorf("peer %s where one of %v was due", p, g)
			}
		}
		rest = rest[k:]
	}
	return nil
}

// TestHTTPAnnounce drives a swarm through the HTTP endpoint on real NATS:
// who gets whom, in what order, and what a refused announce gets.
func TestHTTPAnnounce(t *testing.T) {
	// Requests come from 127.0.0.1, a trusted proxy here, so one peer can
	// be an IPv6 client named by X-Forwarded-For.
	tt := newTestTracker(t, Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	const (
		l1, l2, s1, s2, f1 = "127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:2001", "127.0.0.1:2002", "127.0.0.1:3001"
	)
	// The fleet seeds ih20: its seeder f1 is registered.
	registerSeeder(t, tt.Tracker, ih20, "f1", netip.MustParseAddrPort(f1))
	ih := string(ih20[:])
	peer := func(id, port string, more ...string) string {
		return query(append([]string{"info_hash", ih, "peer_id", fmt.Sprintf("%-20s", id), "port", port}, more...)...)
	}
	for _, tc := range []struct {
		name string
		raw  string
		xff  string
		// want lists the peers in groups (see checkGroups); n is how many
		// were asked for (default 50).
		want    [][]string
		n       int
		want6   []string
		counts  [2]int // complete, incomplete
		failure string
	}{
		{name: "first leecher: the fleet's seeder", raw: peer("L1", "1001", "event", "started", "left", "100"), want: [][]string{{f1}}, counts: [2]int{1, 1}},
		{name: "a seeder gets leechers first", raw: peer("S1", "2001", "event", "started", "left", "0"), want: [][]string{{l1}, {f1}}, counts: [2]int{2, 1}},
		{name: "another seeder", raw: peer("S2", "2002", "left", "0"), want: [][]string{{l1}, {s1, f1}}, counts: [2]int{3, 1}},
		{name: "numwant 2: two of the seeders", raw: peer("L2", "1002", "left", "5", "numwant", "2"),
			want: [][]string{{s1, s2, f1}}, n: 2, counts: [2]int{3, 2}},
		{name: "default numwant: seeders then leechers, never itself", raw: peer("L2", "1002", "left", "5"),
			want: [][]string{{s1, s2, f1}, {l1}}, counts: [2]int{3, 2}},
		{name: "an IPv6 leecher behind the proxy", raw: peer("L6", "1006", "left", "5", "numwant", "0"), xff: "2001:db8::6", n: 0, counts: [2]int{3, 3}},
		{name: "IPv6 peers in peers6", raw: peer("L1", "1001", "left", "100"),
			want: [][]string{{s1, s2, f1}, {l2}}, want6: []string{"[2001:db8::6]:1006"}, counts: [2]int{3, 3}},
		{name: "stopped leaves", raw: peer("L6", "1006", "event", "stopped", "left", "5"), xff: "2001:db8::6"},
		{name: "stopped seeder leaves", raw: peer("S2", "2002", "event", "stopped", "left", "0")},
		{name: "completed: now a seeder", raw: peer("L2", "1002", "event", "completed", "left", "0"), want: [][]string{{l1}, {s1, f1}}, counts: [2]int{3, 1}},
		{name: "dict peers on compact=0", raw: peer("L1", "1001", "left", "100", "compact", "0"), want: [][]string{{s1, l2, f1}}, counts: [2]int{3, 1}},
		{name: "a torrent the fleet does not seed is refused", raw: query("info_hash", strings.Repeat("z", 20), "peer_id", pid, "port", "3000"),
			failure: "Requested download is not authorized for use with this tracker."},
		{name: "bad info_hash", raw: query("info_hash", "short", "peer_id", pid, "port", "3000"), failure: "info_hash must be one 20-byte value"},
		{name: "missing port", raw: query("info_hash", ih, "peer_id", pid), failure: "missing port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.xff != "" {
				hdr = []string{"X-Forwarded-For", tc.xff}
			}
			status, m := get(t, tt.announce, tc.raw, hdr...)
			if status != 200 {
				t.Fatalf("status %d: %v", status, m)
			}
			if tc.failure != "" {
				if m["failure reason"] != tc.failure || len(m) != 1 {
					t.Fatalf("reply %v, want only failure reason %q", m, tc.failure)
				}
				return
			}
			if m["failure reason"] != nil {
				t.Fatalf("failure: %v", m["failure reason"])
			}
			if m["interval"] != int64(600) || m["min interval"] != int64(60) {
				t.Fatalf("interval %v min interval %v", m["interval"], m["min interval"])
			}
			var got, got6 []string
			switch p := m["peers"].(type) {
			case string:
				got = compactPeers(p, 6)
			case []any: // compact=0
				for _, d := range p {
					d := d.(map[string]any)
					got = append(got, net.JoinHostPort(d["ip"].(string), fmt.Sprint(d["port"])))
				}
			default:
				t.Fatalf("peers %T %v", p, p)
			}
			if m["peers6"] != nil {
				got6 = compactPeers(m["peers6"], 18)
			}
			n := 50
			if tc.n != 0 || tc.want == nil {
				n = tc.n
			}
			if err := checkGroups(got, tc.want, n); err != nil || fmt.Sprint(got6) != fmt.Sprint(tc.want6) {
				t.Fatalf("peers %v peers6 %v, want %v %v: %v", got, got6, tc.want, tc.want6, err)
			}
			if c := [2]int{int(m["complete"].(int64)), int(m["incomplete"].(int64))}; tc.counts != c {
				t.Fatalf("complete, incomplete %v, want %v", c, tc.counts)
			}
		})
	}
	for _, c := range []struct {
		event, result string
		want          float64
	}{{"started", "ok", 2}, {"none", "bad_request", 2}, {"none", "unregistered", 1}} {
		if n := testutil.ToFloat64(tt.metrics.announces.WithLabelValues("http", c.event, c.result)); n != c.want {
			t.Errorf("%s %s announces %v, want %v", c.event, c.result, n, c.want)
		}
	}
}
