package ratelimit

import (
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TestLimiter: the buckets' arithmetic, the global bucket, and the bound
// on the peers remembered.
func TestLimiter(t *testing.T) {
	clock := time.Unix(1_700_000_000, 0)
	l := New(10, 20, 15, 30)
	l.SetClock(func() time.Time { return clock })
	take := func(id peer.ID, n int) (ok int) {
		for range n {
			if l.Allow(id) {
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
	l = New(1, 2, 0, 0)
	l.SetClock(func() time.Time { return clock })
	for i := range maxPeers {
		if !l.Allow(peer.ID(fmt.Sprint(i))) {
			t.Fatalf("peer %d refused", i)
		}
	}
	if l.Allow("stranger") {
		t.Fatal("a stranger got a bucket past the bound")
	}
	clock = clock.Add(2 * time.Second) // every bucket full again
	if !l.Allow("stranger") || len(l.peers) != 1 {
		t.Fatalf("after refill: %d peers remembered, want 1", len(l.peers))
	}
}
