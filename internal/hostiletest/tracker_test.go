package hostiletest

import (
	"bufio"
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"golang.org/x/sync/errgroup"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/testenv"
	"github.com/archivefleet/archivefleet/internal/tracker"
)

// Bounds asserted on the fleet's tracker (RELIABILITY.md, "Hostile input").
const (
	// floodAnnounces announces for random torrents store nothing.
	floodAnnounces = 48_000
	// swarmPeers distinct peers announce one served torrent; the tracker
	// stores tracker.DefaultMaxSwarmPeers of them.
	swarmPeers = 4_600
	// maxStoredPeerBytes bounds what one announced peer takes in the bucket.
	maxStoredPeerBytes = 256
	// scrapes of one torrent named 64 times each, on the large swarm, cost
	// at most maxScrapesCPU together.
	scrapes       = 20
	maxScrapesCPU = time.Second
	// largeSwarmAnnounces announces on the large swarm (numwant 200) cost
	// at most maxAnnounceCPU each on average.
	largeSwarmAnnounces = 2_000
	maxAnnounceCPU      = time.Millisecond
)

const refusal = "Requested download is not authorized for use with this tracker."

// trackerClient announces and scrapes over HTTP with a few connections.
type trackerClient struct {
	base string // http://host:port
	hc   *http.Client
}

func newTrackerClient(addr string, conns int) *trackerClient {
	return &trackerClient{base: "http://" + addr, hc: &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}}}
}

// get requests path?raw and decodes the bencoded reply.
func (c *trackerClient) get(path, raw string) (map[string]any, error) {
	resp, err := c.hc.Get(c.base + path + "?" + raw)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: status %d: %q", path, resp.StatusCode, b)
	}
	var m map[string]any
	if err := bencode.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: reply %q: %w", path, b, err)
	}
	return m, nil
}

// announce announces peer port for ih (left 100: a leecher) and returns the
// reply.
func (c *trackerClient) announce(ih [20]byte, port int, numwant int) (map[string]any, error) {
	return c.get("/announce", "info_hash="+url.QueryEscape(string(ih[:]))+"&peer_id="+url.QueryEscape(fmt.Sprintf("-HT0001-%012d", port))+
		"&port="+strconv.Itoa(port)+"&left=100&numwant="+strconv.Itoa(numwant))
}

// parallel runs fn(0..n-1) over workers goroutines; the first error wins.
func parallel(n, workers int, fn func(i int) error) error {
	var g errgroup.Group
	g.SetLimit(workers)
	for i := range n {
		g.Go(func() error { return fn(i) })
	}
	return g.Wait()
}

// bucketState is the tracker bucket's messages and bytes.
func bucketState(t *testing.T, b *bus.Bus) (msgs, bytes uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := b.JS.Stream(ctx, "KV_"+bus.BucketTrackerPeers)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxBytes != bus.TrackerPeersMaxBytes {
		t.Fatalf("bucket MaxBytes %d, want %d", info.Config.MaxBytes, bus.TrackerPeersMaxBytes)
	}
	return info.State.Msgs, info.State.Bytes
}

// metric is the value of the sample of name whose labels hold every one of
// labels ("k=\"v\"") on the fleet's /metrics, 0 if there is none.
func metric(t *testing.T, f *fleetProc, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get(f.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, name+"{") && !strings.HasPrefix(l, name+" ") {
			continue
		}
		ok := true
		for _, lb := range labels {
			ok = ok && strings.Contains(l, lb)
		}
		if ok {
			v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", l, err)
			}
			return v
		}
	}
	return 0
}

// udpTracker is a BEP 15 client on one socket.
type udpTracker struct {
	conn net.Conn
	id   uint64
	tid  uint32
}

func dialUDPTracker(t *testing.T, addr string) *udpTracker {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	u := &udpTracker{conn: c}
	req := binary.BigEndian.AppendUint64(nil, 0x41727101980)
	req = binary.BigEndian.AppendUint32(req, 0)
	req = binary.BigEndian.AppendUint32(req, 0) // transaction id, set by roundTrip
	out, err := u.roundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 16 || binary.BigEndian.Uint32(out) != 0 {
		t.Fatalf("connect answered %x", out)
	}
	u.id = binary.BigEndian.Uint64(out[8:])
	return u
}

// roundTrip sends req (its transaction id, bytes 12-16, filled in) and returns the
// answer; a lost datagram is sent again, up to three times (BEP 15).
func (u *udpTracker) roundTrip(req []byte) ([]byte, error) {
	u.tid++
	binary.BigEndian.PutUint32(req[12:16], u.tid)
	buf := make([]byte, 2048)
	for range 3 {
		if _, err := u.conn.Write(req); err != nil {
			return nil, err
		}
		u.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		for {
			n, err := u.conn.Read(buf)
			if err != nil {
				break // timed out: send again
			}
			if n >= 8 && binary.BigEndian.Uint32(buf[4:8]) == u.tid {
				return append([]byte(nil), buf[:n]...), nil
			}
		}
	}
	return nil, fmt.Errorf("no answer to transaction %d", u.tid)
}

// announce is a BEP 15 announce of peer port for ih, a leecher.
func (u *udpTracker) announce(ih [20]byte, port uint16) ([]byte, error) {
	be := binary.BigEndian
	b := be.AppendUint64(nil, u.id)
	b = be.AppendUint32(b, 1)
	b = be.AppendUint32(b, 0) // transaction id, set by roundTrip
	b = append(b, ih[:]...)
	b = append(b, fmt.Sprintf("-HT0001-%012d", port)...)
	b = be.AppendUint64(b, 0)   // downloaded
	b = be.AppendUint64(b, 100) // left
	b = be.AppendUint64(b, 0)   // uploaded
	b = be.AppendUint32(b, 2)   // started
	b = be.AppendUint32(b, 0)   // ip
	b = be.AppendUint32(b, 0)   // key
	b = be.AppendUint32(b, 50)  // numwant
	b = be.AppendUint16(b, port)
	return u.roundTrip(b)
}

// TestTrackerHostile feeds the all-in-one's tracker, on a port the fleet
// would expose publicly, what issue #18 found it accepting: an announce
// flood for random torrents, a large swarm, scrapes naming one torrent 64
// times, and announces on that swarm. Each bound is asserted on the real
// process (bytes in the bucket, CPU time).
func TestTrackerHostile(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	f := startFleet(t, "ARCHIVEFLEET_TRACKER_LISTEN="+addr)
	f.WaitLog(t, 10*time.Second, "fleet tracker listening")
	b := f.Bus(t)
	hc := newTrackerClient(addr, 8)

	// (a) Announces for random torrents: all refused, nothing stored.
	msgs0, bytes0 := bucketState(t, b)
	f.ResetPeakRSS(t)
	rss0 := f.PeakRSS(t)
	cpu0 := f.CPUTime(t)
	start := time.Now()
	if err := parallel(floodAnnounces, 8, func(i int) error {
		var ih [20]byte
		crand.Read(ih[:])
		m, err := hc.announce(ih, 10000+i%50000, 50)
		if err != nil {
			return err
		}
		if m["failure reason"] != refusal {
			return fmt.Errorf("announce %d for a random torrent answered %v", i, m)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	floodCPU, floodWall := f.CPUTime(t)-cpu0, time.Since(start)
	u := dialUDPTracker(t, addr)
	const udpFlood = 2000
	for i := range udpFlood {
		var ih [20]byte
		crand.Read(ih[:])
		out, err := u.announce(ih, uint16(10000+i))
		if err != nil {
			t.Fatal(err)
		}
		if binary.BigEndian.Uint32(out) != 3 || string(out[8:]) != refusal {
			t.Fatalf("UDP announce for a random torrent answered %q", out)
		}
	}
	msgs1, bytes1 := bucketState(t, b)
	if msgs1 != msgs0 || bytes1 != bytes0 {
		t.Fatalf("after %d refused announces the bucket went from %d messages (%d bytes) to %d (%d bytes)", floodAnnounces+udpFlood, msgs0, bytes0, msgs1, bytes1)
	}
	if n := metric(t, f, "archivefleet_tracker_announces_total", `result="unregistered"`, `transport="http"`); n != floodAnnounces {
		t.Fatalf("unregistered HTTP announces counted %v, want %d", n, floodAnnounces)
	}
	report(t, "announce flood: %d HTTP + %d UDP announces for random torrents, all refused; bucket %d bytes before and after; %v CPU per HTTP announce (%d in %v); peak RSS %s -> %s",
		floodAnnounces, udpFlood, bytes1, floodCPU/floodAnnounces, floodAnnounces, floodWall.Round(time.Millisecond), mib(rss0), mib(f.PeakRSS(t)))

	// (b) A served torrent (a fleet seeder registered) and a swarm of
	// 4,600 distinct peers: the tracker stores DefaultMaxSwarmPeers.
	ih := [20]byte{0x18, 0x18}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tracker.NewRegistry(b).Register(ctx, ih, tracker.SeederIDPrefix+"x", netip.MustParseAddrPort("192.0.2.1:6881"), true); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(10 * time.Second); ; {
		m, err := hc.announce(ih, 9999, 0)
		if err != nil {
			t.Fatal(err)
		}
		if m["failure reason"] == nil {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("announce after the seeder registered: %v", m)
		}
	}
	if err := parallel(swarmPeers, 8, func(i int) error {
		m, err := hc.announce(ih, 20000+i, 0)
		if err != nil {
			return err
		}
		if m["failure reason"] != nil {
			return fmt.Errorf("peer %d refused: %v", i, m)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	msgs2, bytes2 := bucketState(t, b)
	stored := msgs2 - msgs1 - 1 // less the seeder's registration
	if stored != tracker.DefaultMaxSwarmPeers || bytes2-bytes1 > (tracker.DefaultMaxSwarmPeers+1)*maxStoredPeerBytes {
		t.Fatalf("after %d+1 peers announced: %d stored (%d bytes), want %d of at most %d bytes",
			swarmPeers, stored, bytes2-bytes1, tracker.DefaultMaxSwarmPeers, maxStoredPeerBytes)
	}
	report(t, "large swarm: %d distinct peers announced, %d stored (per-torrent cap), %d bytes in the bucket (%d per peer)",
		swarmPeers+1, stored, bytes2-bytes1, (bytes2-bytes1)/(stored+1))

	// Scrapes naming the torrent 64 times: one count each.
	var q []string
	for range 64 {
		q = append(q, "info_hash="+url.QueryEscape(string(ih[:])))
	}
	cpu0 = f.CPUTime(t)
	for range scrapes {
		m, err := hc.get("/scrape", strings.Join(q, "&"))
		if err != nil {
			t.Fatal(err)
		}
		files, _ := m["files"].(map[string]any)
		got, _ := files[string(ih[:])].(map[string]any)
		if len(files) != 1 || got["complete"] != int64(1) || got["incomplete"] != int64(tracker.DefaultMaxSwarmPeers) {
			t.Fatalf("scrape answered %v", m)
		}
	}
	scrapeCPU := f.CPUTime(t) - cpu0
	if scrapeCPU > maxScrapesCPU {
		t.Fatalf("%d scrapes of a %d-peer swarm named 64 times took %v CPU, bound %v", scrapes, tracker.DefaultMaxSwarmPeers+1, scrapeCPU, maxScrapesCPU)
	}
	report(t, "scrapes: %d scrapes naming a %d-peer torrent 64 times (%d B each): %v CPU in all (counted in 10 ms ticks)",
		scrapes, tracker.DefaultMaxSwarmPeers+1, len(strings.Join(q, "&")), scrapeCPU)

	// (c) Announces on the large swarm, each asking 200 peers: stored
	// peers announcing again (no write) and new ones over the cap (not
	// stored), every one answered with a sample.
	cpu0 = f.CPUTime(t)
	start = time.Now()
	if err := parallel(largeSwarmAnnounces, 8, func(i int) error {
		port := 20000 + i // stored peers...
		if i%2 == 1 {
			port = 40000 + i // ...and new ones
		}
		m, err := hc.announce(ih, port, 200)
		if err != nil {
			return err
		}
		if p, _ := m["peers"].(string); len(p) != 200*6 {
			return fmt.Errorf("announce %d got %d bytes of peers, want 200 peers: %v", i, len(p), m["failure reason"])
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	annCPU := f.CPUTime(t) - cpu0
	if per := annCPU / largeSwarmAnnounces; per > maxAnnounceCPU {
		t.Fatalf("%d announces on a %d-peer swarm: %v CPU each, bound %v", largeSwarmAnnounces, tracker.DefaultMaxSwarmPeers+1, per, maxAnnounceCPU)
	}
	if msgs3, _ := bucketState(t, b); msgs3 != msgs2 {
		t.Fatalf("announces of stored peers within the min interval, and of peers over the cap, wrote %d messages", msgs3-msgs2)
	}
	report(t, "announces on the large swarm: %d announces (numwant 200) on a %d-peer torrent: %v CPU each (%v in %v)",
		largeSwarmAnnounces, tracker.DefaultMaxSwarmPeers+1, annCPU/largeSwarmAnnounces, annCPU, time.Since(start).Round(time.Millisecond))
}
