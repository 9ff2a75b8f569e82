package archiver

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/lock"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// TestCommitIsFenced checks the compare-and-set commit: a build holding an
// older fence, or built on a base that moved, cannot commit.
func TestCommitIsFenced(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	st := &state.Store{KV: b.State}
	s := &Service{Bus: b, State: st}
	ctx := context.Background()
	const c = "0x02cfca2ca218f099107c5d4b61cb17bd6566137dbecf7e4557984c882a16accd87"
	base := &state.Build{}
	first := &state.Build{LastEnd: 100, Fence: 5, InfoHash: "aa"}
	if err := s.commit(ctx, c, base, first); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		base *state.Build
		next *state.Build
		want string
	}{
		{"stale fence", first, &state.Build{LastEnd: 200, Fence: 4}, "fence"},
		{"same fence", first, &state.Build{LastEnd: 200, Fence: 5}, "fence"},
		{"moved base", base, &state.Build{LastEnd: 200, Fence: 9}, "moved"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.commit(ctx, c, tt.base, tt.next)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("commit: %v, want a %q rejection", err, tt.want)
			}
		})
	}
	if err := s.commit(ctx, c, first, &state.Build{LastEnd: 200, Fence: 6, InfoHash: "bb"}); err != nil {
		t.Fatalf("newer fence on the current base: %v", err)
	}
	got, _, _ := st.GetBuild(ctx, c)
	if got.LastEnd != 200 || got.Fence != 6 {
		t.Fatalf("state %+v", got)
	}
}

type fakeLocker struct {
	err   error
	calls int
}

func (f *fakeLocker) Acquire(ctx context.Context, key string, ttl time.Duration, floor int64) (lock.Lease, error) {
	f.calls++
	if f.err == nil {
		return nil, ctx.Err()
	}
	return nil, f.err
}

// TestHandleOutcomes checks how the archiver maps what happens onto the
// worker's contract: waiting (a busy lock, an unreachable lock service or
// NATS, an unsettled window, a shutdown) snoozes and so never uses up
// MAX_DELIVER; a malformed event or corrupt community is dead-lettered at
// once.
func TestHandleOutcomes(t *testing.T) {
	ns := testenv.NATS(t)
	b := testenv.Bus(t, ns, bus.Config{})
	ctx := context.Background()
	com := fixture.Community(time.Hour, 1000, archive.Topic{1})
	reg := registry.New(b.Communities)
	if err := reg.Put(ctx, com); err != nil {
		t.Fatal(err)
	}
	st := &state.Store{KV: b.State}
	if _, err := st.Put(ctx, com.ID.String(), &state.Build{LastEnd: 5000, Fence: 1}, 0); err != nil {
		t.Fatal(err)
	}
	corruptID := fixture.ID(fixture.Key())
	if _, err := b.Communities.Put(ctx, corruptID.String(), []byte("{not a community")); err != nil {
		t.Fatal(err)
	}
	// A registry whose connection is gone: NATS unreachable.
	kv := testenv.ClosedBucket(t, ns, bus.BucketCommunities)

	now := uint64(time.Now().Unix())
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	tests := []struct {
		name      string
		ctx       context.Context
		registry  *registry.Registry
		community string
		end       uint64
		settle    time.Duration
		lockErr   error
		outcome   string           // ack, snooze, permanent
		delay     [2]time.Duration // snooze delay range
		want      string           // in the error text
		log       string           // in the log
	}{
		{name: "invalid community id", community: "0x0123", end: now - 10, outcome: "permanent", want: "invalid community id"},
		{name: "end far in the future", end: now + 3600, outcome: "permanent", want: "in the future"},
		{name: "corrupt community", community: corruptID.String(), end: now - 10, outcome: "permanent", want: "corrupt"},
		{name: "not registered", community: "0x02cfca2ca218f099107c5d4b61cb17bd6566137dbecf7e4557984c882a16accd87", end: now - 10, outcome: "ack"},
		{name: "already archived", end: 5000, settle: time.Hour, outcome: "ack"},
		{name: "registry unreachable", registry: registry.New(kv), end: now - 10, outcome: "snooze",
			delay: [2]time.Duration{2 * time.Second, 4*time.Second + 1}, want: "registry read"},
		{name: "lock busy", end: now - 10, lockErr: lock.ErrBusy, outcome: "snooze",
			delay: [2]time.Duration{time.Second, 2*time.Second + 1}, want: "lock busy"},
		{name: "lock service down", end: now - 10, lockErr: errors.New("lock x: dial tcp 127.0.0.1:1: connect: connection refused"),
			outcome: "snooze", delay: [2]time.Duration{2 * time.Second, 4*time.Second + 1}, want: "lock service unavailable"},
		{name: "shutting down", ctx: cancelled, end: now - 10, outcome: "snooze", delay: [2]time.Duration{0, 10 * time.Millisecond}},
		{name: "trigger: window not settled", end: now, settle: 10 * time.Minute, outcome: "snooze",
			delay: [2]time.Duration{10*time.Minute - 2*time.Second, 10*time.Minute + time.Second}, want: "settles at", log: "window not settled yet"},
		{name: "near end (clock skew), no settle", end: now + 60, outcome: "snooze",
			delay: [2]time.Duration{58 * time.Second, 61 * time.Second}, want: "settles at"},
		{name: "settled: goes on to the lock", end: now - 600, settle: 5 * time.Minute, lockErr: lock.ErrBusy, outcome: "snooze",
			delay: [2]time.Duration{time.Second, 2*time.Second + 1}, want: "lock busy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			locker := &fakeLocker{err: tt.lockErr}
			r := reg
			if tt.registry != nil {
				r = tt.registry
			}
			s := New(Service{Bus: b, Registry: r, State: st, Locker: locker, Config: Config{Settle: tt.settle},
				Logger: slog.New(slog.NewTextHandler(&logs, nil))}, prometheus.NewRegistry())
			c := com.ID.String()
			if tt.community != "" {
				c = tt.community
			}
			hctx := ctx
			if tt.ctx != nil {
				hctx = tt.ctx
			}
			err := s.handle(hctx, bus.DueEvent{Community: c, End: tt.end}, bus.Delivery{Deliveries: 1})
			var snooze *bus.SnoozeError
			switch tt.outcome {
			case "ack":
				if err != nil {
					t.Fatalf("err %v, want an ack", err)
				}
			case "permanent":
				if !bus.IsPermanent(err) {
					t.Fatalf("err %v, want a permanent one", err)
				}
			case "snooze":
				if !errors.As(err, &snooze) {
					t.Fatalf("err %v, want a snooze", err)
				}
				if snooze.Delay < tt.delay[0] || snooze.Delay >= tt.delay[1] {
					t.Fatalf("snoozed %v, want [%v, %v)", snooze.Delay, tt.delay[0], tt.delay[1])
				}
			}
			if tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
			if strings.Contains(tt.name, "settled") && !strings.Contains(tt.name, "goes on") && locker.calls != 0 {
				t.Fatal("took the lock for an unsettled window")
			}
			if tt.log != "" && !strings.Contains(logs.String(), tt.log) {
				t.Fatalf("log %q lacks %q", logs.String(), tt.log)
			}
		})
	}
}
