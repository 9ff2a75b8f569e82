package lock

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/archivefleet/archivefleet/internal/testenv"
)

type locker interface {
	Acquire(ctx context.Context, key string, ttl time.Duration, floor int64) (Lease, error)
}

func lockers(t *testing.T) map[string]locker {
	rc := redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	t.Cleanup(func() { rc.Close() })
	return map[string]locker{"redis": &Redis{Client: rc, Prefix: "t:"}, "local": NewLocal()}
}

func TestLeaseLifecycle(t *testing.T) {
	ctx := context.Background()
	for name, l := range lockers(t) {
		t.Run(name, func(t *testing.T) {
			a, err := l.Acquire(ctx, "c1", 300*time.Millisecond, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := l.Acquire(ctx, "c1", time.Second, 0); !errors.Is(err, ErrBusy) {
				t.Fatalf("second acquire: %v, want ErrBusy", err)
			}
			if other, err := l.Acquire(ctx, "c2", time.Second, 0); err != nil {
				t.Fatalf("other key: %v", err)
			} else {
				other.Release(ctx)
			}
			if err := a.Renew(ctx); err != nil {
				t.Fatalf("renew: %v", err)
			}
			time.Sleep(400 * time.Millisecond) // let it expire
			b, err := l.Acquire(ctx, "c1", time.Second, 0)
			if err != nil {
				t.Fatalf("acquire after expiry: %v", err)
			}
			if b.Fence() <= a.Fence() {
				t.Fatalf("fence did not grow: %d then %d", a.Fence(), b.Fence())
			}
			if err := a.Renew(ctx); !errors.Is(err, ErrLost) {
				t.Fatalf("renew of a taken-over lease: %v, want ErrLost", err)
			}
			a.Release(ctx) // must not release b's lock
			if _, err := l.Acquire(ctx, "c1", time.Second, 0); !errors.Is(err, ErrBusy) {
				t.Fatalf("stale release freed the lock: %v", err)
			}
			b.Release(ctx)
			if c, err := l.Acquire(ctx, "c1", time.Second, 0); err != nil {
				t.Fatalf("acquire after release: %v", err)
			} else {
				c.Release(ctx)
			}
		})
	}
}

// TestHoldCancelsOnLoss checks the watchdog cancels work once the lease is
// taken over.
func TestHoldCancelsOnLoss(t *testing.T) {
	for name, l := range lockers(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			ttl := 300 * time.Millisecond
			lease, err := l.Acquire(ctx, "held", ttl, 0)
			if err != nil {
				t.Fatal(err)
			}
			hctx, stop := Hold(ctx, lease, ttl)
			defer stop()
			time.Sleep(2 * ttl) // renewals keep it alive
			if hctx.Err() != nil {
				t.Fatalf("lease lost while renewed: %v", context.Cause(hctx))
			}
			// Steal the lock by releasing it behind the holder's back and taking it.
			lease.Release(ctx)
			thief, err := l.Acquire(ctx, "held", time.Minute, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer thief.Release(ctx)
			select {
			case <-hctx.Done():
				if !errors.Is(context.Cause(hctx), ErrLost) {
					t.Fatalf("cause %v, want ErrLost", context.Cause(hctx))
				}
			case <-time.After(2 * ttl):
				t.Fatal("work not cancelled after the lock was taken over")
			}
		})
	}
}

func TestRedisDown(t *testing.T) {
	rc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer rc.Close()
	l := &Redis{Client: rc}
	if _, err := l.Acquire(context.Background(), "x", time.Second, 0); err == nil || errors.Is(err, ErrBusy) {
		t.Fatalf("acquire with redis down: %v, want a connection error", err)
	}
}

// TestFenceSurvivesCounterLoss checks fences keep growing when Redis lost
// its counter: the caller's floor (the committed fence) lifts the next one.
func TestFenceSurvivesCounterLoss(t *testing.T) {
	addr := testenv.Redis(t)
	rc := redis.NewClient(&redis.Options{Addr: addr})
	defer rc.Close()
	l := &Redis{Client: rc, Prefix: "t:"}
	ctx := context.Background()
	a, err := l.Acquire(ctx, "c", time.Second, 0)
	if err != nil {
		t.Fatal(err)
	}
	a.Release(ctx)
	rc.FlushAll(ctx) // as a restart without persistence
	b, err := l.Acquire(ctx, "c", time.Second, 41)
	if err != nil {
		t.Fatal(err)
	}
	if b.Fence() != 42 {
		t.Fatalf("fence after counter loss = %d, want 42 (above the committed 41)", b.Fence())
	}
	b.Release(ctx)
	c, _ := l.Acquire(ctx, "c", time.Second, 41)
	if c.Fence() != 43 {
		t.Fatalf("next fence = %d, want 43", c.Fence())
	}
}
