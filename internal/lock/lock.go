// Package lock gives one task per community across the fleet: a Redis lease
// (SET NX PX with a random token) that hands out a fencing token from INCR,
// renewed by compare-and-PEXPIRE and released by compare-and-delete; and a
// process-local equivalent for the single-process fleet.
package lock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrBusy means another holder has the lock.
var ErrBusy = errors.New("lock held by another worker")

// ErrLost means the lease expired or was taken over: stop working at once.
var ErrLost = errors.New("lock lost")

// Lease is a held lock.
type Lease interface {
	// Fence is a token that grows with every acquisition of the key.
	Fence() int64
	// Renew extends the lease by its TTL; ErrLost when it is no longer ours.
	Renew(ctx context.Context) error
	// Release gives the lock up if still ours.
	Release(ctx context.Context) error
}

// Redis locks keys in one Redis instance.
type Redis struct {
	Client *redis.Client
	Prefix string // key prefix, e.g. "archivefleet:"
}

// One round trip: take the lock and, only on success, draw the next fence,
// lifted above the floor the caller has seen committed, so fences keep
// growing even if Redis lost its counter (a restart without persistence).
var acquireScript = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local f = redis.call('INCR', KEYS[2])
  local floor = tonumber(ARGV[3])
  if f <= floor then
    f = floor + 1
    redis.call('SET', KEYS[2], f)
  end
  return f
end
return 0`)

var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`)

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)

// Acquire tries once to take key for ttl. The fence it returns is above
// floor (the highest fence the caller has seen committed).
func (r *Redis) Acquire(ctx context.Context, key string, ttl time.Duration, floor int64) (Lease, error) {
	tok := make([]byte, 16)
	rand.Read(tok)
	l := &redisLease{r: r, key: r.Prefix + "lock:" + key, token: hex.EncodeToString(tok), ttl: ttl}
	n, err := acquireScript.Run(ctx, r.Client, []string{l.key, r.Prefix + "fence:" + key}, l.token, ttl.Milliseconds(), floor).Int64()
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", key, err)
	}
	if n == 0 {
		return nil, ErrBusy
	}
	l.fence = n
	return l, nil
}

// Ping reports whether Redis answers.
func (r *Redis) Ping(ctx context.Context) error { return r.Client.Ping(ctx).Err() }

type redisLease struct {
	r     *Redis
	key   string
	token string
	ttl   time.Duration
	fence int64
}

func (l *redisLease) Fence() int64 { return l.fence }

func (l *redisLease) Renew(ctx context.Context) error {
	n, err := renewScript.Run(ctx, l.r.Client, []string{l.key}, l.token, l.ttl.Milliseconds()).Int64()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrLost
	}
	return nil
}

func (l *redisLease) Release(ctx context.Context) error {
	_, err := releaseScript.Run(ctx, l.r.Client, []string{l.key}, l.token).Result()
	return err
}

// Local locks keys within one process. It exists for the single-process
// fleet, where no Redis is needed; it gives no protection across processes.
type Local struct {
	mu     sync.Mutex
	held   map[string]*localLease
	fences map[string]int64
}

// NewLocal returns an empty process-local locker.
func NewLocal() *Local {
	return &Local{held: map[string]*localLease{}, fences: map[string]int64{}}
}

// Acquire implements the same contract as Redis.Acquire within one process.
func (m *Local) Acquire(ctx context.Context, key string, ttl time.Duration, floor int64) (Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.held[key]; ok && time.Now().Before(l.until) {
		return nil, ErrBusy
	}
	m.fences[key] = max(m.fences[key], floor) + 1
	l := &localLease{m: m, key: key, ttl: ttl, until: time.Now().Add(ttl), fence: m.fences[key]}
	m.held[key] = l
	return l, nil
}

// Ping always succeeds.
func (m *Local) Ping(context.Context) error { return nil }

type localLease struct {
	m     *Local
	key   string
	ttl   time.Duration
	until time.Time
	fence int64
}

func (l *localLease) Fence() int64 { return l.fence }

func (l *localLease) Renew(context.Context) error {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	if l.m.held[l.key] != l || time.Now().After(l.until) {
		return ErrLost
	}
	l.until = time.Now().Add(l.ttl)
	return nil
}

func (l *localLease) Release(context.Context) error {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	if l.m.held[l.key] == l {
		delete(l.m.held, l.key)
	}
	return nil
}

// Hold renews lease every ttl/3 until ctx ends or the lease is lost, in which
// case the returned context is cancelled with ErrLost as its cause. Work done
// under the lock must use the returned context.
func Hold(ctx context.Context, lease Lease, ttl time.Duration) (context.Context, context.CancelFunc) {
	hctx, cancel := context.WithCancelCause(ctx)
	go func() {
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		deadline := time.Now().Add(ttl)
		for {
			select {
			case <-hctx.Done():
				return
			case <-t.C:
				rctx, rcancel := context.WithTimeout(hctx, ttl/3)
				err := lease.Renew(rctx)
				rcancel()
				switch {
				case err == nil:
					deadline = time.Now().Add(ttl)
				case errors.Is(err, ErrLost):
					cancel(ErrLost)
					return
				case time.Now().Add(ttl / 3).After(deadline):
					// Renewals keep failing and the lease is about to lapse:
					// assume it is gone rather than work unprotected.
					cancel(fmt.Errorf("%w: renew: %v", ErrLost, err))
					return
				}
			}
		}
	}()
	return hctx, func() { cancel(context.Canceled) }
}
