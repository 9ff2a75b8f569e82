package bus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestIsTransient(t *testing.T) {
	api := func(code jetstream.ErrorCode, status int) error {
		return &jetstream.APIError{Code: status, ErrorCode: code, Description: fmt.Sprintf("code %d", code)}
	}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		// What a cluster gives while a node restarts or a leader moves.
		{"no responders", nats.ErrNoResponders, true},
		{"no responders wrapped as by store.read", fmt.Errorf("read messages: %w", nats.ErrNoResponders), true},
		{"publish: no response from stream", jetstream.ErrNoStreamResponse, true},
		{"request timeout", nats.ErrTimeout, true},
		{"request deadline", fmt.Errorf("message stream fence: %w", context.DeadlineExceeded), true},
		{"pull heartbeat missed", jetstream.ErrNoHeartbeat, true},
		{"consumer leadership changed", jetstream.ErrConsumerLeadershipChanged, true},
		{"server shutdown", jetstream.ErrServerShutdown, true},
		{"async publish timeout", jetstream.ErrAsyncPublishTimeout, true},
		{"reconnecting", nats.ErrConnectionReconnecting, true},
		{"disconnected", nats.ErrDisconnected, true},
		{"cluster not available (10008)", api(10008, 503), true},
		{"no suitable peers (10005)", api(10005, 400), true},
		{"not leader (10009)", api(10009, 500), true},
		{"stream offline (10118)", api(10118, 500), true},
		{"consumer offline (10119)", api(10119, 500), true},
		{"wrapped API error", fmt.Errorf("stream X: %w", api(10008, 503)), true},
		{"object read out of time (nats.go's pipe)", fmt.Errorf("archive object x: %w", &net.OpError{Op: "read", Net: "pipe", Err: os.ErrDeadlineExceeded}), true},
		{"joined with a transient one", errors.Join(errors.New("x"), nats.ErrNoResponders), true},
		// What a repeat cannot fix: fail fast.
		{"cancelled", context.Canceled, false},
		{"cancelled while a request timed out", errors.Join(context.DeadlineExceeded, context.Canceled), false},
		{"closed connection", nats.ErrConnectionClosed, false},
		{"jetstream: closed connection", jetstream.ErrConnectionClosed, false},
		{"key not found", jetstream.ErrKeyNotFound, false},
		{"key exists", jetstream.ErrKeyExists, false},
		{"revision mismatch", jetstream.ErrKeyRevisionMismatch, false},
		{"object not found", jetstream.ErrObjectNotFound, false},
		{"stream not found", jetstream.ErrStreamNotFound, false},
		{"consumer not found", jetstream.ErrConsumerNotFound, false},
		{"no messages", jetstream.ErrNoMessages, false},
		{"bad request (10003)", api(10003, 400), false},
		{"wrong last sequence (10071)", api(10071, 400), false},
		{"insufficient resources (10023)", api(10023, 503), false},
		{"malformed event", ErrMalformed, false},
		{"permanent", Permanent(errors.New("x")), false},
		{"plain error", errors.New("index object: bad torrent"), false},
		{"socket timeout (not an object read)", &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}, false},
		{"webhook timeout", fmt.Errorf("webhook: %w", &url.Error{Op: "Post", URL: "http://x", Err: context.DeadlineExceeded}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsTransient(tc.err); got != tc.want {
				t.Fatalf("IsTransient(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestRetry(t *testing.T) {
	fast := RetryPolicy{First: time.Millisecond, Max: 4 * time.Millisecond, Budget: time.Second}
	t.Run("transient errors are repeated until success", func(t *testing.T) {
		calls := 0
		err := fast.Do(context.Background(), func(context.Context) error {
			if calls++; calls < 4 {
				return fmt.Errorf("read messages: %w", nats.ErrNoResponders)
			}
			return nil
		})
		if err != nil || calls != 4 {
			t.Fatalf("err %v after %d calls, want nil after 4", err, calls)
		}
	})
	t.Run("a non-transient error fails at once", func(t *testing.T) {
		calls := 0
		err := fast.Do(context.Background(), func(context.Context) error {
			calls++
			return jetstream.ErrKeyRevisionMismatch
		})
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) || calls != 1 {
			t.Fatalf("err %v after %d calls, want the mismatch after 1", err, calls)
		}
	})
	t.Run("the budget bounds the repeats", func(t *testing.T) {
		p := RetryPolicy{First: 10 * time.Millisecond, Max: 20 * time.Millisecond, Budget: 100 * time.Millisecond}
		calls := 0
		t0 := time.Now()
		err := p.Do(context.Background(), func(context.Context) error {
			calls++
			return nats.ErrNoResponders
		})
		took := time.Since(t0)
		if !errors.Is(err, nats.ErrNoResponders) || took > 300*time.Millisecond || calls < 4 {
			t.Fatalf("err %v after %d calls in %v, want no responders after a few calls within ~100ms", err, calls, took)
		}
	})
	t.Run("a first attempt longer than the budget gets one repeat", func(t *testing.T) {
		p := RetryPolicy{First: time.Millisecond, Budget: 20 * time.Millisecond}
		calls := 0
		err := p.Do(context.Background(), func(context.Context) error {
			calls++
			time.Sleep(30 * time.Millisecond) // a request timing out
			return context.DeadlineExceeded
		})
		if !errors.Is(err, context.DeadlineExceeded) || calls != 2 {
			t.Fatalf("err %v after %d calls, want the timeout after 2", err, calls)
		}
	})
	t.Run("a cancelled context stops the repeats", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		calls := 0
		err := RetryPolicy{First: 50 * time.Millisecond, Budget: 10 * time.Second}.Do(ctx, func(context.Context) error {
			if calls++; calls == 2 {
				cancel()
			}
			return nats.ErrNoResponders
		})
		if !errors.Is(err, context.Canceled) || calls != 2 {
			t.Fatalf("err %v after %d calls, want cancelled after 2", err, calls)
		}
	})
	t.Run("each attempt has its own timeout", func(t *testing.T) {
		p := RetryPolicy{First: time.Millisecond, Budget: time.Second, Attempt: 20 * time.Millisecond}
		calls := 0
		err := p.Do(context.Background(), func(ctx context.Context) error {
			if calls++; calls == 1 {
				<-ctx.Done() // a request lost with its node
				return ctx.Err()
			}
			return nil
		})
		if err != nil || calls != 2 {
			t.Fatalf("err %v after %d calls, want nil after 2", err, calls)
		}
	})
	t.Run("RetryValue returns the value", func(t *testing.T) {
		calls := 0
		v, err := RetryValue(context.Background(), func(context.Context) (int, error) {
			if calls++; calls == 1 {
				return 0, jetstream.ErrNoStreamResponse
			}
			return 42, nil
		})
		if err != nil || v != 42 {
			t.Fatalf("%d, %v", v, err)
		}
	})
}

func TestTransientSnooze(t *testing.T) {
	for _, tc := range []struct {
		deliveries uint64
		lo, hi     time.Duration
	}{
		{0, 250 * time.Millisecond, 500 * time.Millisecond},
		{1, 250 * time.Millisecond, 500 * time.Millisecond},
		{2, 500 * time.Millisecond, time.Second},
		{3, time.Second, 2 * time.Second},
		{5, 2500 * time.Millisecond, 5 * time.Second},
		{1000, 2500 * time.Millisecond, 5 * time.Second},
	} {
		for range 50 {
			if d := transientSnooze(tc.deliveries); d < tc.lo || d > tc.hi {
				t.Fatalf("transientSnooze(%d) = %v, want within [%v, %v]", tc.deliveries, d, tc.lo, tc.hi)
			}
		}
	}
}
