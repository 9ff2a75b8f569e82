package wakupeer

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Rate limits, per remote peer (token buckets: a rate and a burst).
const (
	// RelayPeerRate and RelayPeerBurst bound the messages one peer may
	// forward to us per second. nwaku has no such limit (it relies on
	// gossipsub scoring and RLN); without one, a single peer can make us
	// validate, cache and forward as much as it can send. 100 a second from
	// each peer is taken to be well above what a community shard carries
	// (not measured on status.prod); past it a peer's messages are ignored
	// (not delivered or forwarded, no score penalty), and as gossipsub
	// marks them seen, the same message from another peer is not taken
	// either for 2 minutes.
	RelayPeerRate  = 100
	RelayPeerBurst = 200
	// LightPushPeerRate and LightPushPeerBurst bound the lightpush requests
	// one client may make per second, LightPushRate and LightPushBurst
	// those of all clients together. nwaku's limit
	// (--rate-limit lightpush:volume/period,
	// common/rate_limit/request_limiter.nim) is likewise a global bucket
	// and one per peer; a request over either is answered 429 without
	// being read.
	LightPushPeerRate  = 10
	LightPushPeerBurst = 20
	LightPushRate      = 100
	LightPushBurst     = 200
	// limiterMaxPeers bounds the peers a limiter remembers. A bucket that
	// has refilled is forgotten (a new one starts full, the same thing), so
	// only peers active within the last burst/rate seconds are kept; they
	// are connected peers, which the gater caps at MaxPeers. Past the
	// bound, a peer not yet remembered is refused until buckets refill.
	limiterMaxPeers = 4096
)

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

// limiter is a token bucket per peer and, when globalRate is set, one for
// all peers together. Its cost is bounded: at most limiterMaxPeers buckets,
// and a sweep of them at most once per refill period.
type limiter struct {
	rate, burst             float64
	globalRate, globalBurst float64 // 0: no global bucket

	mu        sync.Mutex
	now       func() time.Time // time.Now; tests stop the clock
	peers     map[peer.ID]*bucket
	global    bucket
	lastSweep time.Time
}

// newLimiter returns a limiter whose buckets start full.
func newLimiter(rate, burst, globalRate, globalBurst float64) *limiter {
	// The global bucket's zero time fills it at its first use.
	return &limiter{rate: rate, burst: burst, globalRate: globalRate, globalBurst: globalBurst,
		now: time.Now, peers: map[peer.ID]*bucket{}}
}

// allow takes a token from id's bucket, then from the global one; it
// reports whether both had one. As nwaku's, a request refused by the global
// bucket still spent its peer's token.
func (l *limiter) allow(id peer.ID) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.peers[id]
	if b == nil {
		l.sweep(now)
		if len(l.peers) >= limiterMaxPeers {
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
func (l *limiter) sweep(now time.Time) {
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

// setClock replaces the clock (tests).
func (l *limiter) setClock(now func() time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.now = now
}
