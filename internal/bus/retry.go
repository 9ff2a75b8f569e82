package bus

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A JetStream cluster answers some requests with an error that the same
// request, repeated a few milliseconds later, does not get: a pull request
// sent right after its consumer was created reaches a node that has not yet
// heard of the consumer's subscription (no responders), a stream or
// consumer is between leaders, a request in flight to a node that is going
// down times out. Retry repeats an operation over such errors for a few
// seconds; IsTransient tells them from errors a repeat cannot fix, which
// fail at once.

// RetryPolicy bounds Retry. The zero value is DefaultRetry.
type RetryPolicy struct {
	// First is the delay before the first repeat; each next delay doubles,
	// up to Max. Every delay is jittered to [d/2, d].
	First, Max time.Duration
	// Budget caps the time from the first attempt to the start of the
	// last: once it has passed, the last error is returned. A first
	// attempt that alone took longer (a request lost with a node that went
	// down times out after 5 s) still gets one repeat.
	Budget time.Duration
	// Attempt, if set, bounds each attempt (a request lost with a node
	// that went down is then repeated after Attempt, not after the
	// caller's whole timeout). Leave it 0 for operations whose length
	// grows with their data (an object's upload, a long read).
	Attempt time.Duration
}

// DefaultRetry repeats after 20 ms, 40 ms, … up to 1 s between attempts,
// for at most 5 s: enough for a new consumer's subscription to reach the
// other nodes (milliseconds), for a stream to elect a leader after its
// leader shut down (70–80 ms on the 3-node test cluster) or the meta group
// (about 1 s), short enough that a build waiting on it does not hold its
// lock much longer. Longer outages (a SIGKILLed leader waits out Raft's
// election timeout) end in the worker's transient snooze (worker.go).
var DefaultRetry = RetryPolicy{First: 20 * time.Millisecond, Max: time.Second, Budget: 5 * time.Second}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.First <= 0 {
		p.First = DefaultRetry.First
	}
	if p.Max < p.First {
		p.Max = max(DefaultRetry.Max, p.First)
	}
	if p.Budget <= 0 {
		p.Budget = DefaultRetry.Budget
	}
	return p
}

// Retry calls op with DefaultRetry (see RetryPolicy.Do).
func Retry(ctx context.Context, op func(context.Context) error) error {
	return DefaultRetry.Do(ctx, op)
}

// RetryValue is Retry for an operation that returns a value.
func RetryValue[T any](ctx context.Context, op func(context.Context) (T, error)) (T, error) {
	var v T
	err := Retry(ctx, func(ctx context.Context) error {
		var err error
		v, err = op(ctx)
		return err
	})
	return v, err
}

// Do calls op until it returns nil or an error IsTransient does not accept,
// ctx ends, or the budget is spent, sleeping a short jittered back-off
// between attempts; it returns op's last error (ctx's error if ctx ended
// while waiting). Only retry what can safely run twice: reads, publishes
// with a message id, creations whose "already exists" the caller handles.
func (p RetryPolicy) Do(ctx context.Context, op func(context.Context) error) error {
	p = p.withDefaults()
	start := time.Now()
	delay := p.First
	for attempt := 1; ; attempt++ {
		err := p.attempt(ctx, op)
		if cerr := ctx.Err(); err != nil && cerr != nil && !errors.Is(err, cerr) {
			return errors.Join(err, cerr)
		}
		if err == nil || !IsTransient(err) || ctx.Err() != nil {
			return err
		}
		if attempt > 1 && time.Since(start)+delay/2 > p.Budget {
			return err
		}
		if Sleep(ctx, delay/2+rand.N(delay/2+1)) != nil {
			return errors.Join(err, ctx.Err())
		}
		delay = min(2*delay, p.Max)
	}
}

func (p RetryPolicy) attempt(ctx context.Context, op func(context.Context) error) error {
	if p.Attempt <= 0 {
		return op(ctx)
	}
	actx, cancel := context.WithTimeout(ctx, p.Attempt)
	defer cancel()
	return op(actx)
}

// transientCodes are JetStream API error codes a cluster returns while it
// moves leaders or a peer restarts.
var transientCodes = map[jetstream.ErrorCode]bool{
	10004: true, // JSClusterIncompleteErr: incomplete results
	10005: true, // JSClusterNoPeersErrF: no suitable peers for placement (a peer is down)
	10007: true, // JSClusterNotAssignedErr: not assigned to this server
	10008: true, // JSClusterNotAvailErr: JetStream system temporarily unavailable
	10009: true, // JSClusterNotLeaderErr: cluster can not handle request
	10118: true, // JSStreamOfflineErr: stream is offline
	10119: true, // JSConsumerOfflineErr: consumer is offline
	10163: true, // JSStreamExpectedLastSeqPerSubjectNotReady
	10194: true, // JSStreamOfflineReasonErrF
	10195: true, // JSConsumerOfflineReasonErrF
}

// IsTransient reports whether err is one a JetStream cluster gives while a
// node restarts or a leader moves, so that repeating the same request
// shortly after may succeed: no responders, a request timeout, a missed
// pull heartbeat, a consumer's leader changing or its server shutting down,
// a client reconnecting to another node, and the API errors for an
// unavailable or leaderless cluster, stream or consumer. A cancelled
// context, an error from the data (not found, wrong revision, malformed), a
// closed connection and an HTTP request's error (even a timeout) are not
// transient. An object read that ran out of time is.
func IsTransient(err error) bool {
	// An HTTP call's timeout (a webhook) is the other end's business, not
	// the cluster's: it stays an ordinary failure.
	if err == nil || errors.Is(err, context.Canceled) || errors.As(err, new(*url.Error)) {
		return false
	}
	switch {
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, jetstream.ErrNoHeartbeat), errors.Is(err, jetstream.ErrConsumerLeadershipChanged),
		errors.Is(err, jetstream.ErrServerShutdown), errors.Is(err, jetstream.ErrAsyncPublishTimeout),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, errObjectIncomplete):
		return true
	}
	// nats.go's object reader means to return nats.ErrTimeout when a read
	// runs out of time, but returns its in-memory pipe's own deadline error
	// ("read pipe: i/o timeout") when that fires just before the context's.
	if opErr := (*net.OpError)(nil); errors.As(err, &opErr) && opErr.Net == "pipe" && errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return transientCodes[apiErr.ErrorCode]
	}
	return false
}

// IsWrongLastSequence reports whether err is the server refusing a write
// whose expected last sequence (on its subject, or the stream's) is not
// the current one.
func IsWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
