package wakupeer

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/wakuwire"
	pubsubpb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"
)

// TestCheckMessage: the relay's clock and size rule, nwaku's RLN rule (gap
// in whole seconds > 20 rejected).
func TestCheckMessage(t *testing.T) {
	now := time.Unix(1_700_000_000, 123_456_789)
	at := func(d time.Duration) int64 { return now.Add(d).UnixNano() }
	for _, tc := range []struct {
		name string
		ts   int64
		size int
		want string
	}{
		{"now", at(0), 100, ""},
		{"20.99 s old", at(-20990 * time.Millisecond), 100, ""},
		{"20.99 s ahead", at(20990 * time.Millisecond), 100, ""},
		{"21 s old", at(-21 * time.Second), 100, rejectTooOld},
		{"21 s ahead", at(21 * time.Second), 100, rejectTooNew},
		{"1000 hours old", at(-1000 * time.Hour), 100, rejectTooOld},
		{"1000 days ahead", at(1000 * 24 * time.Hour), 100, rejectTooNew},
		{"zero", 0, 100, rejectNoTimestamp},
		{"one nanosecond after 1970", 1, 100, rejectTooOld},
		{"negative", -1, 100, rejectTooOld},
		{"most negative", math.MinInt64, 100, rejectTooOld},
		{"largest", math.MaxInt64, 100, rejectTooNew},
		{"at the size limit", at(0), MaxWakuMessageSize, ""},
		{"over the size limit", at(0), MaxWakuMessageSize + 1, rejectTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &wakuwire.Message{Payload: []byte("x"), ContentTopic: ctA, Timestamp: tc.ts}
			if got := checkMessage(m, tc.size, now); got != tc.want {
				t.Fatalf("checkMessage = %q, want %q", got, tc.want)
			}
			if tc.want != "" && !strings.HasPrefix(describeReject(tc.want, m, now), "invalid message: ") {
				t.Fatalf("description %q", describeReject(tc.want, m, now))
			}
		})
	}
}

// TestValidatorClockGap: messages stamped outside the window, or not at all,
// from another relay peer are neither delivered nor forwarded, and are
// counted by reason; a current one is delivered and forwarded.
func TestValidatorClockGap(t *testing.T) {
	t.Parallel()
	p := startPeer(t, Config{Registerer: prometheus.NewRegistry()})
	topic, _ := bareRelay(t, p)
	third := startPeer(t, Config{StaticPeers: []string{tcpAddr(t, p)}})
	eventually(t, 10*time.Second, "third peer meshed", func() bool { return third.MeshPeers(shard32) == 1 })
	ch, cancel, err := p.Subscribe(shard32)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	forwarded, cancel3, err := third.Subscribe(shard32)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel3()
	bad := map[string]int64{
		rejectTooOld:      time.Now().Add(-1000 * time.Hour).UnixNano(),
		rejectTooNew:      time.Now().Add(1000 * 24 * time.Hour).UnixNano(),
		rejectNoTimestamp: 0,
	}
	for reason, ts := range bad {
		m := testMessage(reason)
		m.Timestamp = ts
		if err := topic.Publish(t.Context(), m.Marshal()); err != nil {
			t.Fatal(err)
		}
	}
	good := testMessage("current")
	if err := topic.Publish(t.Context(), good.Marshal()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "each rejection counted", func() bool {
		for reason := range bad {
			if testutil.ToFloat64(p.metrics.Rejected.WithLabelValues(shard32, reason)) != 1 {
				return false
			}
		}
		return true
	})
	// Validation runs in parallel: the good one may come first, but the
	// bad ones were counted already, so nothing else can follow it.
	for _, c := range []<-chan Received{ch, forwarded} {
		if r := receive(t, c, 5*time.Second); r.Hash != wakuwire.Hash(shard32, good) {
			t.Fatalf("delivered %q, want only the current message", r.Message.Payload)
		}
		select {
		case r := <-c:
			t.Fatalf("also delivered %q", r.Message.Payload)
		default:
		}
	}
}

// TestRelayFrameOverhead: a message of MaxWakuMessageSize on the longest
// shard topic fits gossipsub's frame.
func TestRelayFrameOverhead(t *testing.T) {
	topic := wakuwire.ShardTopic(65535, 1023)
	rpc := &pubsubpb.RPC{Publish: []*pubsubpb.Message{{Data: make([]byte, MaxWakuMessageSize), Topic: &topic}}}
	if n := proto.Size(rpc); n > MaxRelayMessageSize {
		t.Fatalf("RPC of %d bytes, frame limit %d", n, MaxRelayMessageSize)
	}
}

// TestPublishChecksClock: our own publications obey the rule we apply to
// others'.
func TestPublishChecksClock(t *testing.T) {
	t.Parallel()
	p := startPeer(t, Config{})
	for _, ts := range []int64{0, time.Now().Add(-time.Minute).UnixNano(), time.Now().Add(time.Minute).UnixNano()} {
		m := testMessage("stale")
		m.Timestamp = ts
		if _, err := p.Publish(t.Context(), shard32, m); err == nil || !strings.Contains(err.Error(), "invalid message") {
			t.Errorf("timestamp %d: Publish err = %v", ts, err)
		}
	}
	big := testMessage("big")
	big.Payload = make([]byte, MaxWakuMessageSize)
	if _, err := p.Publish(t.Context(), shard32, big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized: Publish err = %v", err)
	}
	if _, err := p.Publish(t.Context(), shard32, testMessage("fine")); err != nil {
		t.Fatal(err)
	}
}

// TestRelayRateLimit: with the clock stopped (no refill), a peer forwarding
// more than RelayPeerBurst messages has the rest ignored and counted; its
// first RelayPeerBurst are delivered.
func TestRelayRateLimit(t *testing.T) {
	t.Parallel()
	p := startPeer(t, Config{Registerer: prometheus.NewRegistry()})
	stopped := time.Now()
	p.relayLimit.setClock(func() time.Time { return stopped })
	topic, _ := bareRelay(t, p)
	ch, cancel, err := p.Subscribe(shard32)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	var mu sync.Mutex
	delivered := 0
	go func() {
		for range ch {
			mu.Lock()
			delivered++
			mu.Unlock()
		}
	}()
	limited := func() float64 {
		return testutil.ToFloat64(p.metrics.Rejected.WithLabelValues(shard32, ignoreRateLimited))
	}
	received := func() float64 { return testutil.ToFloat64(p.metrics.Received.WithLabelValues(shard32)) }
	const sent, batch = RelayPeerBurst + 50, 25
	// In batches, each awaited: a burst larger than gossipsub's validation
	// queue (32) would be dropped before our validator sees it.
	for i := 0; i < sent; i += batch {
		for j := i; j < i+batch; j++ {
			if err := topic.Publish(t.Context(), testMessage(fmt.Sprint("m", j)).Marshal()); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, 10*time.Second, fmt.Sprintf("%d messages validated", i+batch), func() bool {
			return received()+limited() == float64(i+batch)
		})
	}
	if received() != RelayPeerBurst || limited() != sent-RelayPeerBurst {
		t.Fatalf("received %v, rate limited %v; want %d and %d", received(), limited(), RelayPeerBurst, sent-RelayPeerBurst)
	}
	if n := testutil.ToFloat64(p.metrics.Rejected.WithLabelValues(shard32, rejectOverloaded)); n != 0 {
		t.Fatalf("%v dropped by an overloaded validation queue", n)
	}
	// Ignoring is not rejecting: the peer keeps its score.
	if s := p.Score(topicPeer(t, p)); s < 0 {
		t.Fatalf("rate-limited peer's score %v", s)
	}
	eventually(t, 5*time.Second, "every received message delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return delivered == RelayPeerBurst
	})
}

// topicPeer is p's only peer on shard32.
func topicPeer(t *testing.T, p *Peer) peer.ID {
	t.Helper()
	ps := p.ps.ListPeers(shard32)
	if len(ps) != 1 {
		t.Fatalf("%d peers on %s", len(ps), shard32)
	}
	return ps[0]
}

// TestLimiter: the buckets' arithmetic, the global bucket, and the bound
// on the peers remembered.
func TestLimiter(t *testing.T) {
	clock := time.Unix(1_700_000_000, 0)
	l := newLimiter(10, 20, 15, 30)
	l.setClock(func() time.Time { return clock })
	take := func(id peer.ID, n int) (ok int) {
		for range n {
			if l.allow(id) {
				ok++
			}
		}
		return ok
	}
	if got := take("a", 25); got != 20 {
		t.Fatalf("burst: %d of 25 allowed, want 20", got)
	}
	clock = clock.Add(500 * time.Millisecond)
	if got := take("a", 10); got != 5 {
		t.Fatalf("after 0.5 s at 10/s: %d allowed, want 5", got)
	}
	// The global bucket (30) has 25 spent and 7.5 back: b gets 12 of its 20.
	if got := take("b", 20); got != 12 {
		t.Fatalf("global bucket: b got %d, want 12", got)
	}
	// The bound: full buckets are forgotten, active ones kept, strangers
	// refused while the map is full of active peers.
	l = newLimiter(1, 2, 0, 0)
	l.setClock(func() time.Time { return clock })
	for i := range limiterMaxPeers {
		if !l.allow(peer.ID(fmt.Sprint(i))) {
			t.Fatalf("peer %d refused", i)
		}
	}
	if l.allow("stranger") {
		t.Fatal("a stranger got a bucket past the bound")
	}
	clock = clock.Add(2 * time.Second) // every bucket full again
	if !l.allow("stranger") || len(l.peers) != 1 {
		t.Fatalf("after refill: %d peers remembered, want 1", len(l.peers))
	}
}
