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
// chunk of small messages, and grows for a message larger than that. The
// budget keeps room for the largest message a batch can hold apart from the
// bases, and growing into it takes the budget's one grow turn: a message
// grows its buffer step by step, and two requests each holding part of
// what both need would wait for each other until both were refused. With
// the turn, the request that has it always finishes its message, and the
// others wait holding only their base. A request that cannot get its base
// or the turn within the budget's wait is answered "busy" (HTTP 503 with
// Retry-After) rather than allowed to grow the process. Memory for ingest
// is so bounded by the budget whatever the bodies hold, the requests in
// flight by (budget - the largest message's share)/LeaseBase, and large
// messages (over smallMessage) are read one at a time per process.
const (
	// DefaultIngestMemory is the default budget: one message at the
	// archive cap (60 MB of hex and its 30 MB of bytes) and 16 requests of
	// small messages at once.
	DefaultIngestMemory = 128 << 20
	// LeaseBase is what a request holds from its start: its read buffer,
	// one chunk of decoded messages and their publishes in flight.
	LeaseBase = 2 << 20
	// DefaultIngestWait is how long a request waits for its base or the
	// grow turn before it is answered busy.
	DefaultIngestWait = 5 * time.Second
)

// ErrBusy is returned when the ingest budget stays exhausted for the
// budget's wait: the request is refused (or cut short) and may be sent
// again later.
var ErrBusy = errors.New("ingest is busy: too much in flight")

// Budget bounds the memory ingest requests hold at once.
type Budget struct {
	bases *semaphore.Weighted // total minus maxGrow, taken LeaseBase a request
	turn  chan struct{}       // held by the one lease grown past LeaseBase
	wait  time.Duration
}

// maxGrow is what a lease may hold above LeaseBase: the largest message a
// batch can hold.
var maxGrow = maxLeaseFor(MaxBatchBytes) - LeaseBase

// NewBudget returns a budget of total bytes; a request waits up to wait
// for its share. total is at least LeaseBase plus the largest message a
// batch can hold (maxLeaseFor(MaxBatchBytes)), or that message could never
// be read.
func NewBudget(total int64, wait time.Duration) (*Budget, error) {
	if need := maxLeaseFor(MaxBatchBytes); total < need {
		return nil, fmt.Errorf("ingest memory %d bytes is under %d, what one message of a %d-byte batch needs", total, need, MaxBatchBytes)
	}
	return &Budget{bases: semaphore.NewWeighted(total - maxGrow), turn: make(chan struct{}, 1), wait: wait}, nil
}

// maxLeaseFor is the lease a message of raw JSON bytes needs: the bytes
// read, the decoded fields (hex halves them) and the base.
func maxLeaseFor(raw int64) int64 { return LeaseBase + raw + raw/2 }

// Lease is one request's share of a Budget.
type Lease struct {
	b    *Budget
	held int64 // LeaseBase once acquired, more while it has the turn
}

// Acquire takes a new lease of LeaseBase, waiting up to the budget's wait;
// ErrBusy if it cannot.
func (b *Budget) Acquire(ctx context.Context) (*Lease, error) {
	if !b.bases.TryAcquire(LeaseBase) {
		wctx, cancel := context.WithTimeout(ctx, b.wait)
		defer cancel()
		if err := b.bases.Acquire(wctx, LeaseBase); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, ErrBusy
		}
	}
	return &Lease{b: b, held: LeaseBase}, nil
}

// Grow makes the lease hold at least n bytes, taking the grow turn if it
// does not have it yet.
func (l *Lease) Grow(ctx context.Context, n int64) error {
	if n <= l.held {
		return nil
	}
	if n > LeaseBase+maxGrow {
		return fmt.Errorf("%w: a message needs %d bytes, the ingest budget gives one at most %d", ErrBusy, n, LeaseBase+maxGrow)
	}
	if l.held <= LeaseBase {
		select {
		case l.b.turn <- struct{}{}:
		default:
			t := time.NewTimer(l.b.wait)
			defer t.Stop()
			select {
			case l.b.turn <- struct{}{}:
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
				return ErrBusy
			}
		}
	}
	l.held = n
	return nil
}

// Shrink gives back what the lease holds above LeaseBase (after a large
// message), and with it the grow turn.
func (l *Lease) Shrink() {
	if l.held > LeaseBase {
		<-l.b.turn
		l.held = LeaseBase
	}
}

// Release gives the whole lease back.
func (l *Lease) Release() {
	if l.held > 0 {
		l.Shrink()
		l.b.bases.Release(LeaseBase)
		l.held = 0
	}
}
