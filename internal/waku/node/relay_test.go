package node

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/testenv"
	"github.com/archivefleet/archivefleet/internal/waku/relay"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The relay validator as the node runs it, against a bare gossipsub node
// and other nodes; its rules alone are tested in internal/waku/relay.

// TestValidatorClockGap: messages stamped outside the window, or not at all,
// from another relay peer are neither delivered nor forwarded, and are
// counted by reason; a current one is delivered and forwarded.
func TestValidatorClockGap(t *testing.T) {
	t.Parallel()
	p := startPeer(t, Config{Registerer: prometheus.NewRegistry()})
	topic, _ := bareRelay(t, p)
	third := startPeer(t, Config{StaticPeers: []string{tcpAddr(t, p)}})
	testenv.Eventually(t, 10*time.Second, func() bool { return third.MeshPeers(shard32) == 1 }, "third peer meshed")
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
		relay.RejectTooOld:      time.Now().Add(-1000 * time.Hour).UnixNano(),
		relay.RejectTooNew:      time.Now().Add(1000 * 24 * time.Hour).UnixNano(),
		relay.RejectNoTimestamp: 0,
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
	testenv.Eventually(t, 5*time.Second, func() bool {
		for reason := range bad {
			if testutil.ToFloat64(p.metrics.Relay.Rejected.WithLabelValues(shard32, reason)) != 1 {
				return false
			}
		}
		return true
	}, "each rejection counted")

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
	big.Payload = make([]byte, relay.MaxWakuMessageSize)
	if _, err := p.Publish(t.Context(), shard32, big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized: Publish err = %v", err)
	}
	if _, err := p.Publish(t.Context(), shard32, testMessage("fine")); err != nil {
		t.Fatal(err)
	}
}

// TestRelayRateLimit: with the clock stopped (no refill), a peer forwarding
// more than relay.PeerBurst messages has the rest ignored and counted; its
// first relay.PeerBurst are delivered.
func TestRelayRateLimit(t *testing.T) {
	t.Parallel()
	p := startPeer(t, Config{Registerer: prometheus.NewRegistry()})
	stopped := time.Now()
	p.relayLimit.SetClock(func() time.Time { return stopped })
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
		return testutil.ToFloat64(p.metrics.Relay.Rejected.WithLabelValues(shard32, relay.IgnoreRateLimited))
	}
	received := func() float64 { return testutil.ToFloat64(p.metrics.Relay.Received.WithLabelValues(shard32)) }
	const sent, batch = relay.PeerBurst + 50, 25
	// In batches, each awaited: a burst larger than gossipsub's validation
	// queue (32) would be dropped before our validator sees it.
	for i := 0; i < sent; i += batch {
		for j := i; j < i+batch; j++ {
			if err := topic.Publish(t.Context(), testMessage(fmt.Sprint("m", j)).Marshal()); err != nil {
				t.Fatal(err)
			}
		}
		testenv.Eventually(t, 10*time.Second, func() bool {
			return received()+limited() == float64(i+batch)
		}, fmt.Sprintf("%d messages validated", i+batch))

	}
	if received() != relay.PeerBurst || limited() != sent-relay.PeerBurst {
		t.Fatalf("received %v, rate limited %v; want %d and %d", received(), limited(), relay.PeerBurst, sent-relay.PeerBurst)
	}
	if n := testutil.ToFloat64(p.metrics.Relay.Rejected.WithLabelValues(shard32, relay.RejectOverloaded)); n != 0 {
		t.Fatalf("%v dropped by an overloaded validation queue", n)
	}
	// Ignoring is not rejecting: the peer keeps its score.
	if s := p.Score(topicPeer(t, p)); s < 0 {
		t.Fatalf("rate-limited peer's score %v", s)
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return delivered == relay.PeerBurst
	}, "every received message delivered")

}

// topicPeer is p's only peer on shard32.
func topicPeer(t *testing.T, p *Node) peer.ID {
	t.Helper()
	ps := p.ps.ListPeers(shard32)
	if len(ps) != 1 {
		t.Fatalf("%d peers on %s", len(ps), shard32)
	}
	return ps[0]
}
