package messages

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/semaphore"
)

// Ingest memory: every request holds a lease on one budget per process
// (HTTP and NATS ingest alike). A lease starts at LeaseBase, enough for a
// chunk of small messages, and grows for a message larger than that; a
// request that cannot get its share within the budget's wait is answered
// "busy" (HTTP 503 with Retry-After) rather than allowed to grow the
// process. Memory for ingest is so bounded by the budget whatever the
// bodies hold, and the number of requests in flight by budget/LeaseBase.
const (
	// DefaultIngestMemory is the default budget: one message at the
	// archive cap (60 MB of hex and its 30 MB of bytes) and a few dozen
	// requests of small messages at once.
	DefaultIngestMemory = 128 << 20
	// LeaseBase is what a request holds from its start: its read buffer,
	// one chunk of decoded messages and their publishes in flight.
	LeaseBase = 2 << 20
	// DefaultIngestWait is how long a request waits for its share of the
	// budget before it is answered busy.
	DefaultIngestWait = 5 * time.Second
)

// ErrBusy is returned when the ingest budget stays exhausted for the
// budget's wait: the request is refused (or cut short) and may be sent
// again later.
var ErrBusy = errors.New("ingest is busy: too much in flight")

// Budget bounds the memory ingest requests hold at once.
type Budget struct {
	sem   *semaphore.Weighted
	total int64
	wait  time.Duration
}

// NewBudget returns a budget of total bytes; a request waits up to wait
// for its share. total is at least LeaseBase plus the largest message a
// batch can hold (maxLeaseFor(MaxBatchBytes)), or that message could never
// be read.
func NewBudget(total int64, wait time.Duration) (*Budget, error) {
	if need := maxLeaseFor(MaxBatchBytes); total < need {
		return nil, fmt.Errorf("ingest memory %d bytes is under %d, what one message of a %d-byte batch needs", total, need, MaxBatchBytes)
	}
	return &Budget{sem: semaphore.NewWeighted(total), total: total, wait: wait}, nil
}

// maxLeaseFor is the lease a message of raw JSON bytes needs: the bytes
// read, the decoded fields (hex halves them) and the base.
func maxLeaseFor(raw int64) int64 { return LeaseBase + raw + raw/2 }

// Lease is one request's share of a Budget.
type Lease struct {
	b    *Budget
	held int64
}

// Acquire takes a new lease of LeaseBase, waiting up to the budget's wait;
// ErrBusy if it cannot.
func (b *Budget) Acquire(ctx context.Context) (*Lease, error) {
	l := &Lease{b: b}
	if err := l.Grow(ctx, LeaseBase); err != nil {
		return nil, err
	}
	return l, nil
}

// Grow makes the lease hold at least n bytes.
func (l *Lease) Grow(ctx context.Context, n int64) error {
	if n <= l.held {
		return nil
	}
	more := n - l.held
	if more > l.b.total {
		return fmt.Errorf("%w: a message needs %d bytes of an ingest budget of %d", ErrBusy, n, l.b.total)
	}
	if !l.b.sem.TryAcquire(more) {
		wctx, cancel := context.WithTimeout(ctx, l.b.wait)
		defer cancel()
		if err := l.b.sem.Acquire(wctx, more); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return ErrBusy
		}
	}
	l.held = n
	return nil
}

// Shrink gives back what the lease holds above LeaseBase (after a large
// message).
func (l *Lease) Shrink() {
	if l.held > LeaseBase {
		l.b.sem.Release(l.held - LeaseBase)
		l.held = LeaseBase
	}
}

// Release gives the whole lease back.
func (l *Lease) Release() {
	if l.held > 0 {
		l.b.sem.Release(l.held)
		l.held = 0
	}
}
