// Package ratelimit holds the token buckets the Waku protocols limit remote
// peers with: one per peer and, optionally, one for all peers together
// (relay's per-peer limit, lightpush's per-client and global limits).
package ratelimit

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// maxPeers bounds the peers a Limiter remembers. A bucket that has refilled
// is forgotten (a new one starts full, the same thing), so only peers
// active within the last burst/rate seconds are kept; they are connected
// peers, which the node's gater caps. Past the bound, a peer not yet
// remembered is refused until buckets refill.
const maxPeers = 4096

// bucket is a token bucket: tokens as of at.
type bucket struct {
	tokens float64
	at     time.Time
}

// refill brings b to now and reports whether it is full.
func (b *bucket) refill(now time.Time, rate, burst float64) bool {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(burst, b.tokens+d.Seconds()*rate)
		b.at = now
	}
	return b.tokens >= burst
}

func (b *bucket) take(now time.Time, rate, burst float64) bool {
	b.refill(now, rate, burst)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Limiter is a token bucket per peer and, when its global rate is set, one
// for all peers together. Its cost is bounded: at most maxPeers buckets,
// and a sweep of them at most once per refill period.
type Limiter struct {
	rate, burst             float64
	globalRate, globalBurst float64 // 0: no global bucket

	mu        sync.Mutex
	now       func() time.Time
	peers     map[peer.ID]*bucket
	global    bucket
	lastSweep time.Time
}

// New returns a Limiter allowing each peer rate requests a second after a
// burst of burst, and, when globalRate is not 0, all peers together
// globalRate a second after a burst of globalBurst. Buckets start full.
func New(rate, burst, globalRate, globalBurst float64) *Limiter {
	// The global bucket's zero time fills it at its first use.
	return &Limiter{rate: rate, burst: burst, globalRate: globalRate, globalBurst: globalBurst,
		now: time.Now, peers: map[peer.ID]*bucket{}}
}

// Allow takes a token from id's bucket, then from the global one; it
// reports whether both had one. As nwaku's, a request refused by the global
// bucket still spent its peer's token.
func (l *Limiter) Allow(id peer.ID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.peers[id]
	if b == nil {
		l.sweep(now)
		if len(l.peers) >= maxPeers {
			return false
		}
		b = &bucket{tokens: l.burst, at: now}
		l.peers[id] = b
	}
	if !b.take(now, l.rate, l.burst) {
		return false
	}
	return l.globalRate == 0 || l.global.take(now, l.globalRate, l.globalBurst)
}

// sweep forgets the full buckets, at most once per refill period (a bucket
// refills within burst/rate), so the map holds the peers active lately;
// l.mu is held.
func (l *Limiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < time.Duration(l.burst/l.rate*float64(time.Second)) {
		return
	}
	l.lastSweep = now
	for id, b := range l.peers {
		if b.refill(now, l.rate, l.burst) {
			delete(l.peers, id)
		}
	}
}

// SetClock replaces the clock (time.Now): tests stop it so that no bucket
// refills.
func (l *Limiter) SetClock(now func() time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.now = now
}
