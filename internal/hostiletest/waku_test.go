package hostiletest

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	"github.com/archivefleet/archivefleet/internal/testenv"
	"github.com/archivefleet/archivefleet/internal/waku/lightpush"
	"github.com/archivefleet/archivefleet/internal/waku/node"
	"github.com/archivefleet/archivefleet/internal/waku/rpc"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
)

// The all-in-one's Waku settings in TestWakuHostile.
const (
	wakuHostileMaxPeers = 10
	wakuHostileBudget   = 32 << 20 // WAKU_STORE_MAX_BYTES
	wakuJunkSize        = 900_000
	wakuJunkMessages    = 150
	wakuJunkRate        = 10 // messages a second, half of them by lightpush: within a client's rate
	wakuDialers         = 120
)

var wakuTopic = wakuwire.ShardTopic(16, 32)

// TestWakuHostile runs the all-in-one with the store and lightpush services
// on and a small WAKU_MAX_PEERS, and feeds its Waku peer from libp2p hosts
// in this process: lightpush of messages stamped 1000 hours back and 1000
// days ahead (refused, 420), a burst of lightpush requests from one client
// (429 past its burst), 150 junk messages of 900 KB through relay and
// lightpush (the store stays within its byte budget, and resident memory
// with it), and 120 peers dialling at once (at most WAKU_MAX_PEERS stay).
func TestWakuHostile(t *testing.T) {
	f := startFleet(t, "ARCHIVEFLEET_WAKU_STORE_SERVICE=true", "ARCHIVEFLEET_WAKU_LIGHTPUSH_SERVICE=true",
		"ARCHIVEFLEET_WAKU_MAX_PEERS="+strconv.Itoa(wakuHostileMaxPeers),
		"ARCHIVEFLEET_WAKU_STORE_MAX_BYTES="+strconv.Itoa(wakuHostileBudget))
	line := f.WaitLog(t, 30*time.Second, "waku edge listening")
	addr := regexp.MustCompile(`/ip4/127\.0\.0\.1/tcp/\d+/p2p/\w+`).FindString(line)
	fleet, err := peer.AddrInfoFromString(addr)
	if err != nil {
		t.Fatalf("waku address in %q: %v", line, err)
	}
	var clients []*node.Node
	client := func(static bool) *node.Node {
		cfg := node.Config{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testenv.Logger()}
		if static {
			cfg.StaticPeers = []string{addr}
		}
		p, err := node.New(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		clients = append(clients, p)
		return p
	}
	// A relay peer of the fleet's: lightpush needs one to relay to.
	relay := client(true)
	wakuWait(t, 20*time.Second, "the fleet's relay peer", func() bool {
		return relay.TopicPeers(wakuTopic) == 1 && wakuMetric(t, f, "waku_relay_mesh_peers", "") == 1
	})

	t.Run("stale and future lightpush refused", func(t *testing.T) {
		c := client(false)
		for _, tc := range []struct {
			name string
			at   time.Time
		}{{"1000 hours old", time.Now().Add(-1000 * time.Hour)}, {"1000 days ahead", time.Now().Add(1000 * 24 * time.Hour)}} {
			_, err := c.LightPush(t.Context(), *fleet, wakuTopic, wakuJunk(t, 100, tc.at))
			var lpErr *rpc.StatusError[lightpush.Status]
			if !errors.As(err, &lpErr) || lpErr.Code != lightpush.InvalidMessage {
				t.Fatalf("%s: %v, want 420", tc.name, err)
			}
			report(t, "waku lightpush of a message stamped %s: %d %s", tc.name, lpErr.Code, lpErr.Desc)
		}
		if n := wakuMetric(t, f, "waku_lightpush_served_total", `status="420"`); n != 2 {
			t.Fatalf("420 served %v times", n)
		}
		if n := wakuMetric(t, f, "waku_store_messages", ""); n != 0 {
			t.Fatalf("%v messages stored", n)
		}
		c.Close() // each relay peer of the fleet's gets a copy of the flood below
	})

	t.Run("lightpush burst from one client", func(t *testing.T) {
		c := client(false)
		served, start := 0, time.Now()
		for {
			_, err := c.LightPush(t.Context(), *fleet, wakuTopic, wakuJunk(t, 100, time.Now()))
			var lpErr *rpc.StatusError[lightpush.Status]
			if errors.As(err, &lpErr) && lpErr.Code == lightpush.TooManyRequests {
				if !lpErr.IsRetryable() {
					t.Fatal("429 not retryable")
				}
				break
			}
			if err != nil {
				t.Fatalf("push %d: %v", served+1, err)
			}
			if served++; served > 200 {
				t.Fatal("200 pushes in a row served")
			}
		}
		// The bucket refills while the burst runs; at least the burst is
		// served, and at most what the rate adds.
		took := time.Since(start)
		if most := lightpush.PeerBurst + int(took.Seconds()*lightpush.PeerRate) + 1; served < lightpush.PeerBurst || served > most {
			t.Fatalf("%d served before 429 in %v, want %d..%d", served, took, lightpush.PeerBurst, most)
		}
		report(t, "waku lightpush burst: 429 after %d requests served in %v", served, took.Round(time.Millisecond))
		c.Close()
	})

	t.Run("junk flood within the store budget", func(t *testing.T) {
		f.ResetPeakRSS(t)
		rss0, cpu0 := f.RSS(t), f.CPUTime(t)
		// Every message the store saw is kept, evicted for bytes, or
		// skipped (a full store does not take one older than all it keeps).
		seen := func() float64 {
			return wakuMetric(t, f, "waku_store_messages", "") + wakuMetric(t, f, "waku_store_evicted_total", `reason="bytes"`) +
				wakuMetric(t, f, "waku_store_skipped_total", "")
		}
		seen0 := seen()
		// Half through relay, half by lightpush (one client, within its
		// rate), paced at wakuJunkRate: gossipsub keeps the last 6 s of
		// relayed messages for gossip, so its share of memory follows the
		// rate; the store's follows its budget.
		pusher := client(false)
		published, pushed := 0, 0
		tick := time.NewTicker(time.Second / wakuJunkRate)
		defer tick.Stop()
		var peakHalf int64
		for i := range wakuJunkMessages {
			if i == wakuJunkMessages/2 {
				peakHalf = f.PeakRSS(t) - rss0
			}
			<-tick.C
			m := wakuJunk(t, wakuJunkSize, time.Now())
			if i%2 == 0 {
				if _, err := relay.Publish(t.Context(), wakuTopic, m); err != nil {
					t.Fatalf("relay publish %d: %v", i, err)
				}
				published++
				continue
			}
			if _, err := pusher.LightPush(t.Context(), *fleet, wakuTopic, m); err != nil {
				t.Fatalf("lightpush %d: %v", i, err)
			}
			pushed++
		}
		wakuWait(t, 30*time.Second, "every junk message through the store", func() bool { return seen() == seen0+wakuJunkMessages })
		bytes := wakuMetric(t, f, "waku_store_bytes", "")
		kept := wakuMetric(t, f, "waku_store_messages", "")
		peak, cpu := f.PeakRSS(t)-rss0, f.CPUTime(t)-cpu0
		report(t, "waku junk flood: %d x %d B at %d/s (%d relay, %d lightpush): store %s in %v messages (budget %s); "+
			"peak RSS +%s after half, +%s after all; CPU %v", wakuJunkMessages, wakuJunkSize, wakuJunkRate, published, pushed,
			mib(int64(bytes)), kept, mib(wakuHostileBudget), mib(peakHalf), mib(peak), cpu.Round(time.Millisecond))
		if bytes > wakuHostileBudget || kept > wakuHostileBudget/wakuJunkSize {
			t.Fatalf("store holds %s in %v messages, budget %s", mib(int64(bytes)), kept, mib(wakuHostileBudget))
		}
		// Resident growth: the store's budget plus gossipsub's window
		// (every message relayed in the last 6 heartbeats is kept for
		// gossip), twice over with Go's collector (GOGC=100), plus 64 MiB
		// for buffers in flight. Without the budget the store alone would
		// keep all 135 MB (measured: +258 MiB).
		window := int64(6 * wakuJunkRate * wakuJunkSize)
		if most := 2*(wakuHostileBudget+window) + 64<<20; peak > most {
			t.Fatalf("peak resident memory grew by %s, bound %s", mib(peak), mib(most))
		}
	})

	t.Run("120 peers dial at once", func(t *testing.T) {
		for _, c := range clients {
			c.Close()
		}
		wakuWait(t, 20*time.Second, "the test's peers gone", func() bool { return wakuMetric(t, f, "waku_peers_connected", "") == 0 })
		refused0 := wakuMetric(t, f, "waku_peers_refused_total", `reason="max_peers"`)
		hosts := make([]host.Host, wakuDialers)
		for i := range hosts {
			h, err := libp2p.New(libp2p.NoListenAddrs, libp2p.Transport(tcp.NewTCPTransport), libp2p.Security(noise.ID, noise.New),
				libp2p.Muxer(yamux.ID, yamux.DefaultTransport), libp2p.DisableRelay(), libp2p.DisableMetrics())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { h.Close() })
			hosts[i] = h
		}
		cpu0, start := f.CPUTime(t), time.Now()
		var wg sync.WaitGroup
		var failed atomic.Int32
		for _, h := range hosts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
				defer cancel()
				// A dial refused after the handshake may succeed here and
				// be closed at once; one refused before it (libp2p's
				// resource manager bounds the handshakes in progress) fails.
				if h.Connect(ctx, *fleet) != nil {
					failed.Add(1)
				}
			}()
		}
		wg.Wait()
		took := time.Since(start)
		refused := func() float64 { return wakuMetric(t, f, "waku_peers_refused_total", `reason="max_peers"`) - refused0 }
		dialersConnected := func() int {
			n := 0
			for _, h := range hosts {
				if len(h.Network().ConnsToPeer(fleet.ID)) > 0 {
					n++
				}
			}
			return n
		}
		// Settled when the dialers still connected are the peers the
		// fleet counts (the refused ones have seen their connection close).
		var connected float64
		wakuWait(t, 20*time.Second, "the refused dialers disconnected", func() bool {
			connected = wakuMetric(t, f, "waku_peers_connected", "")
			return float64(dialersConnected()) == connected
		})
		report(t, "waku %d dials at once: %v connected right after (WAKU_MAX_PEERS %d), %v refused after the handshake, %d failed before it; "+
			"dials took %v, fleet CPU %v", wakuDialers, connected, wakuHostileMaxPeers, refused(), failed.Load(),
			took.Round(time.Millisecond), (f.CPUTime(t) - cpu0).Round(time.Millisecond))
		if connected > wakuHostileMaxPeers || connected == 0 {
			t.Fatalf("%v peers connected, WAKU_MAX_PEERS %d", connected, wakuHostileMaxPeers)
		}
	})
}

// wakuJunk is a message of size random bytes stamped at.
func wakuJunk(t *testing.T, size int, at time.Time) *wakuwire.Message {
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return &wakuwire.Message{Payload: b, ContentTopic: "/hostile/1/junk/proto", Timestamp: at.UnixNano()}
}

// wakuMetric is the sum of the fleet's series of metric name whose labels
// contain labels ("" for all).
func wakuMetric(t *testing.T, f *fleetProc, name, labels string) float64 {
	t.Helper()
	resp, err := http.Get(f.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		series, value, ok := strings.Cut(l, " ")
		if !ok || strings.HasPrefix(l, "#") || (series != name && !strings.HasPrefix(series, name+"{")) || !strings.Contains(series, labels) {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", l, err)
		}
		sum += v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return sum
}

// wakuWait waits up to d for cond.
func wakuWait(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", d, fmt.Sprint(what))
		}
	}
}
