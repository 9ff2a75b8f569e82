package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// A handler given to Work returns one of:
//
//   - nil: done (or nothing to do); the event is acked and removed;
//   - SnoozeFor(d, reason): not now, come back within d (jittered, see
//     Jitter); this is waiting, not failing, so it never uses up the event's
//     failures. Snooze(d, reason) is the exact form, for a wait that ends at
//     a known time (a window settling, a schedule's time);
//   - Unavailable(what, err): a read of what the handler depends on failed:
//     corrupt stored data is permanent, anything else (NATS away or slow) a
//     SnoozeFor(UnavailableSnooze);
//   - Permanent(err), or any error wrapping ErrMalformed or ErrCorrupt: the
//     event can never succeed; it goes to the dead-letter stream now, the
//     error's chain in the reason;
//   - RetryAfter(d, err): a failure, retried after d;
//   - an error IsTransient accepts (no responders, a timeout, a cluster
//     between leaders: see retry.go): a short snooze, not a failure;
//   - any other error: a failure, retried after a jittered exponential
//     back-off chosen by the worker.
//
// Once an event has failed Config.MaxDeliver times it is dead-lettered. The
// dead letter's reason is the error's text (errors keep their chains).

// ErrMalformed marks an event that cannot be understood (undecodable, or
// naming something that cannot exist): it is dead-lettered at once.
var ErrMalformed = errors.New("malformed event")

// Delivery describes one delivery of an event to a handler.
type Delivery struct {
	Subject   string
	Stream    string
	Consumer  string
	StreamSeq uint64
	// Deliveries counts the event's deliveries so far, this one included:
	// snoozes and ack-wait expiries count here (it is JetStream's
	// NumDelivered), not in Failures.
	Deliveries uint64
	// Failures counts the failures recorded before this delivery.
	Failures int
}

// SnoozeError is what Snooze returns: the event comes back after Delay
// without counting a failure.
type SnoozeError struct {
	Delay  time.Duration
	Reason string
}

func (e *SnoozeError) Error() string { return fmt.Sprintf("snoozed for %v: %s", e.Delay, e.Reason) }

// Snooze asks for the event to come back after exactly d (at once when
// d <= 0) without counting a failure: for a wait that ends at a known time.
// Waits of unknown length use SnoozeFor.
func Snooze(d time.Duration, reason string) error { return &SnoozeError{Delay: d, Reason: reason} }

// SnoozeFor asks for the event to come back within d, jittered (Jitter), so
// events waiting on the same thing (a busy lock, an unreachable dependency,
// missing peers) do not come back together. Waiting is not failing: no
// failure is counted.
func SnoozeFor(d time.Duration, reason string) error { return Snooze(Jitter(d), reason) }

// UnavailableSnooze is how long an event whose handler could not read what
// it depends on (NATS away or slow) waits: 2–4 s.
const UnavailableSnooze = 4 * time.Second

// ErrCorrupt marks stored data (a registry entry, a state, a key, an
// object) that does not decode or check: reading it again gives the same
// bytes, so an event that needs it is dead-lettered at once. Packages
// declare their own such errors with Corrupt.
var ErrCorrupt = errors.New("corrupt stored data")

type corruptError struct{ msg string }

func (e *corruptError) Error() string        { return e.msg }
func (e *corruptError) Is(target error) bool { return target == ErrCorrupt }

// Corrupt returns a new sentinel error with text msg that is also
// ErrCorrupt (errors.Is), for a package's own corrupt-data error.
func Corrupt(msg string) error { return &corruptError{msg} }

// IsCorrupt reports whether err is corrupt stored data: ErrCorrupt, or JSON
// that does not decode.
func IsCorrupt(err error) bool {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	return errors.Is(err, ErrCorrupt) || errors.As(err, &syn) || errors.As(err, &typ)
}

// Unavailable classifies a failed read of what a handler depends on (the
// registry, the state, a key): corrupt data is Permanent, the chain kept;
// anything else is NATS away or slow, which is waiting, not failing:
// SnoozeFor(UnavailableSnooze).
func Unavailable(what string, err error) error {
	if IsCorrupt(err) {
		return Permanent(fmt.Errorf("%s: %w", what, err))
	}
	return SnoozeFor(UnavailableSnooze, what+": "+err.Error())
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as a failure no retry can fix: the event is
// dead-lettered now. errors.Is and errors.As see through it.
func Permanent(err error) error {
	if err == nil {
		err = errors.New("permanent failure")
	}
	return &permanentError{err}
}

// IsPermanent reports whether err dead-letters an event at once: it wraps a
// Permanent error, ErrMalformed or ErrCorrupt.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p) || errors.Is(err, ErrMalformed) || errors.Is(err, ErrCorrupt)
}

type retryError struct {
	delay time.Duration
	err   error
}

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

// RetryAfter is a failure (it counts toward MaxDeliver) retried after d
// rather than after the worker's back-off.
func RetryAfter(d time.Duration, err error) error {
	if err == nil {
		err = errors.New("retry")
	}
	return &retryError{delay: d, err: err}
}

// malformedError is an undecodable payload: it wraps both ErrMalformed and
// the decoder's error.
type malformedError struct {
	what string
	err  error
}

func (e *malformedError) Error() string   { return "decode " + e.what + ": " + e.err.Error() }
func (e *malformedError) Unwrap() []error { return []error{ErrMalformed, e.err} }

// WorkerConfig shapes a worker loop.
type WorkerConfig struct {
	Stream, Consumer string
	Kind             string // dead-letter subject suffix, e.g. "due"
	// Event names the payload in errors, e.g. "due event" gives "decode due
	// event: …"; default "event".
	Event   string
	Slots   int // concurrent messages; each fetches one at a time
	Logger  *slog.Logger
	Metrics *WorkerMetrics // optional
}

// WorkerMetrics counts what worker loops do.
type WorkerMetrics struct {
	handled *prometheus.CounterVec
	snoozed *prometheus.CounterVec
	dead    *prometheus.CounterVec
	pending *prometheus.GaugeVec
}

// NewWorkerMetrics registers the worker metrics on reg, or reuses them when
// another service in the same process registered them already.
func NewWorkerMetrics(reg prometheus.Registerer) *WorkerMetrics {
	return &WorkerMetrics{
		handled: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_events_handled_total",
			Help: "Deliveries handled by consumer and outcome (ack; snooze: waiting, not counted as a failure; retry: a failure; dead)."},
			[]string{"consumer", "outcome"})),
		snoozed: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_events_snoozed_seconds_total",
			Help: "Delay asked for by snoozes, by consumer: time events spent waiting rather than failing."}, []string{"consumer"})),
		dead: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_events_dead_lettered_total",
			Help: "Events moved to the dead-letter stream, by kind."}, []string{"kind"})),
		pending: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "archivefleet_queue_pending",
			Help: "Events waiting for a consumer (queue lag), sampled by the workers."}, []string{"consumer"})),
	}
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			return are.ExistingCollector.(C)
		}
		panic(err)
	}
	return c
}

// Work runs cfg.Slots loops, each fetching one event of type T (decoded from
// JSON once, here), calling h and settling the event by what h returned (see
// Snooze, Permanent, RetryAfter and ErrMalformed), until ctx is cancelled;
// then it waits for in-flight handlers to finish. A panicking handler
// dead-letters its event with the stack in the reason.
//
// While a handler runs, InProgress heartbeats go out every third of the ack
// wait the server applies, read from the live consumer configuration (its
// AckWait, or the smallest BackOff entry if one is set), so a long build is
// not redelivered. No message waits in a client buffer, so none expires
// there.
//
// Failures are counted in the Failures bucket, so the count survives a
// worker's restart and is shared by every replica; snoozes and redeliveries
// after an ack wait (a worker killed, NATS unreachable) count none.
func Work[T any](ctx context.Context, b *Bus, cfg WorkerConfig, h func(ctx context.Context, ev T, d Delivery) error) error {
	if cfg.Event == "" {
		cfg.Event = "event"
	}
	return b.work(ctx, cfg, func(ctx context.Context, msg jetstream.Msg, d Delivery) (err error) {
		var ev T
		if raw, ok := any(&ev).(*Raw); ok {
			*raw = Raw{Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data()}
		} else if err := json.Unmarshal(msg.Data(), &ev); err != nil {
			return &malformedError{what: cfg.Event, err: err}
		}
		defer func() {
			if r := recover(); r != nil {
				err = Permanent(fmt.Errorf("handler panic: %v\n%s", r, debug.Stack()))
			}
		}()
		return h(ctx, ev, d)
	})
}

// Raw is an event taken as it is, for a worker of Work[Raw]: its subject,
// headers and payload, with no JSON decoding (the announcements carry signed
// protobuf bytes and their facts in headers).
type Raw struct {
	Subject string
	Header  nats.Header
	Data    []byte
}

type worker struct {
	b    *Bus
	cfg  WorkerConfig
	log  *slog.Logger
	cons jetstream.Consumer
	call func(ctx context.Context, msg jetstream.Msg, d Delivery) error
}

func (b *Bus) work(ctx context.Context, cfg WorkerConfig, call func(context.Context, jetstream.Msg, Delivery) error) error {
	// A service starting while its consumer's leader moves would otherwise
	// exit.
	cons, err := RetryValue(ctx, func(ctx context.Context) (jetstream.Consumer, error) {
		return b.JS.Consumer(ctx, cfg.Stream, cfg.Consumer)
	})
	if err != nil {
		return fmt.Errorf("consumer %s/%s: %w", cfg.Stream, cfg.Consumer, err)
	}
	if cfg.Slots < 1 {
		cfg.Slots = 1
	}
	w := &worker{b: b, cfg: cfg, log: cfg.Logger, cons: cons, call: call}
	if w.log == nil {
		w.log = slog.Default()
	}
	var wg sync.WaitGroup
	// Keep the cached consumer info fresh: another service's Setup may have
	// changed the ack wait the heartbeats follow.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if info, err := cons.Info(ctx); err == nil && cfg.Metrics != nil {
				cfg.Metrics.pending.WithLabelValues(cfg.Consumer).Set(float64(info.NumPending + uint64(info.NumAckPending)))
			}
			Sleep(ctx, 5*time.Second)
		}
	}()
	for i := 0; i < cfg.Slots; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				batch, err := cons.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
				if err != nil {
					if ctx.Err() == nil {
						w.log.Warn("fetch failed", "consumer", cfg.Consumer, "err", err)
						if IsTransient(err) {
							Sleep(ctx, transientSnooze(1))
						} else {
							Sleep(ctx, time.Second)
						}
					}
					continue
				}
				for msg := range batch.Messages() {
					w.handle(ctx, msg)
				}
				if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && ctx.Err() == nil {
					w.log.Debug("fetch batch error", "err", err)
				}
			}
		}()
	}
	wg.Wait()
	return nil
}

// heartbeatEvery is a third of the ack wait the server applies to the
// consumer: its AckWait, which the server sets to BackOff[0] when a BackOff
// list is set, and never more than the smallest BackOff entry.
func heartbeatEvery(info *jetstream.ConsumerInfo, fallback time.Duration) time.Duration {
	wait := fallback
	if info != nil {
		if info.Config.AckWait > 0 {
			wait = info.Config.AckWait
		}
		for _, d := range info.Config.BackOff {
			if d > 0 && d < wait {
				wait = d
			}
		}
	}
	return max(wait/3, 10*time.Millisecond)
}

func failureKey(consumer string, seq uint64) string {
	return consumer + "." + strconv.FormatUint(seq, 10)
}

func (w *worker) handle(ctx context.Context, msg jetstream.Msg) {
	d := Delivery{Subject: msg.Subject(), Stream: w.cfg.Stream, Consumer: w.cfg.Consumer, Deliveries: 1}
	if meta, err := msg.Metadata(); err == nil {
		d.StreamSeq, d.Deliveries = meta.Sequence.Stream, meta.NumDelivered
	}
	key := failureKey(w.cfg.Consumer, d.StreamSeq)
	countKnown := true
	if d.Deliveries > 1 { // a first delivery has no failures yet
		n, _, err := w.failures(key)
		if err != nil {
			w.log.Warn("failure count unreadable; taken as 0", "subject", d.Subject, "err", err)
			countKnown = false
		}
		d.Failures = n
	}

	hbCtx, cancelHB := context.WithCancel(context.Background())
	hbDone := make(chan struct{})
	// Wait for the heartbeat to stop before answering: an InProgress sent
	// after a NakWithDelay would reset the delay to the ack wait.
	stopHB := func() { cancelHB(); <-hbDone }
	go func() {
		defer close(hbDone)
		every := heartbeatEvery(w.cons.CachedInfo(), w.b.Config.AckWait)
		t := time.NewTimer(every)
		defer t.Stop()
		for {
			select {
			case <-hbCtx.Done():
				return
			case <-t.C:
				msg.InProgress()
				t.Reset(heartbeatEvery(w.cons.CachedInfo(), w.b.Config.AckWait))
			}
		}
	}()
	err := w.call(ctx, msg, d)
	stopHB()

	var snooze *SnoozeError
	switch {
	case err == nil:
		w.count("ack")
		actx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// A repeat after an ack lost on its way is harmless; after an ack
		// whose reply was lost the server has already removed the event.
		if err := quick.Do(actx, msg.DoubleAck); err != nil {
			w.log.Warn("ack failed; the event will be redelivered and found done", "subject", d.Subject, "err", err)
			return
		}
		if d.Failures > 0 || !countKnown {
			w.forget(key)
		}
	case IsPermanent(err):
		w.count("dead")
		if w.deadLetter(msg, d, err.Error()) && (d.Failures > 0 || !countKnown) {
			w.forget(key)
		}
	case errors.As(err, &snooze):
		w.snooze(msg, d, snooze.Delay, snooze.Reason)
	case ctx.Err() != nil:
		// Shutting down: whatever failed, hand the event back at once.
		w.snooze(msg, d, 0, "worker shutting down: "+err.Error())
	case IsTransient(err) && !errors.As(err, new(*retryError)):
		// NATS hiccuped (a node restarting, a leader moving, a subscription
		// not yet known cluster-wide): the next attempt, a moment later,
		// most likely succeeds. Counted as a failure, it would back off
		// exponentially although each attempt is as likely to work as the
		// first — see transientSnooze.
		delay := transientSnooze(d.Deliveries)
		w.log.Info("transient error; retrying shortly (not counted as a failure)", "subject", d.Subject,
			"delivery", d.Deliveries, "in", delay, "err", err)
		w.snooze(msg, d, delay, "transient: "+err.Error())
	default:
		w.fail(msg, d, key, err)
	}
}

func (w *worker) count(outcome string) {
	if w.cfg.Metrics != nil {
		w.cfg.Metrics.handled.WithLabelValues(w.cfg.Consumer, outcome).Inc()
	}
}

func (w *worker) snooze(msg jetstream.Msg, d Delivery, delay time.Duration, reason string) {
	w.count("snooze")
	delay = max(delay, 0)
	if w.cfg.Metrics != nil {
		w.cfg.Metrics.snoozed.WithLabelValues(w.cfg.Consumer).Add(delay.Seconds())
	}
	w.log.Debug("snoozed; retrying later", "subject", d.Subject, "delivery", d.Deliveries, "failures", d.Failures,
		"in", delay, "reason", reason)
	var err error
	if delay == 0 {
		err = msg.Nak()
	} else {
		err = msg.NakWithDelay(delay)
	}
	if err != nil {
		w.log.Warn("nak failed; the event comes back after the ack wait", "subject", d.Subject, "err", err)
	}
}

// fail records a failure and retries the event, or dead-letters it once it
// has failed MaxDeliver times.
func (w *worker) fail(msg jetstream.Msg, d Delivery, key string, err error) {
	delay := backoff(d.Failures + 1)
	var re *retryError
	if errors.As(err, &re) && re.delay > 0 {
		delay = re.delay
	}
	n, kerr := w.addFailure(key)
	if kerr != nil {
		// Not counted: the failure store is part of NATS, which is what is
		// failing; the event comes back after the delay (or the ack wait).
		w.count("retry")
		w.log.Warn("failed; failure not recorded, retrying later", "subject", d.Subject, "delivery", d.Deliveries,
			"in", delay, "err", err, "record_err", kerr)
		msg.NakWithDelay(delay)
		return
	}
	if limit := w.b.Config.MaxDeliver; limit > 0 && n >= limit {
		w.count("dead")
		if w.deadLetter(msg, d, fmt.Sprintf("gave up after %d failures (%d deliveries): %v", n, d.Deliveries, err)) {
			w.forget(key)
		}
		return
	}
	w.count("retry")
	w.log.Warn("failed; retrying later", "subject", d.Subject, "delivery", d.Deliveries, "failures", n, "in", delay, "err", err)
	if err := msg.NakWithDelay(delay); err != nil {
		w.log.Warn("nak failed; the event comes back after the ack wait", "subject", d.Subject, "err", err)
	}
}

// failures reads an event's failure count and its revision (0: none).
func (w *worker) failures(key string) (int, uint64, error) {
	if w.b.Failures == nil {
		return 0, 0, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var e jetstream.KeyValueEntry
	err := quick.Do(ctx, func(ctx context.Context) (err error) {
		e, err = w.b.Failures.Get(ctx, key)
		return err
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	n, err := strconv.Atoi(string(e.Value()))
	if err != nil {
		return 0, e.Revision(), fmt.Errorf("failure count %s: %w", key, err)
	}
	return n, e.Revision(), nil
}

// addFailure increments an event's failure count with a compare-and-set and
// returns the new count.
func (w *worker) addFailure(key string) (int, error) {
	if w.b.Failures == nil {
		return 0, errors.New("no failure bucket")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for attempt := 0; ; attempt++ {
		n, rev, err := w.failures(key)
		if err != nil && rev == 0 {
			return 0, err
		}
		val := []byte(strconv.Itoa(n + 1))
		// Repeated over transient errors. A write that took effect but whose
		// reply was lost comes back as a conflict: re-read below, and the
		// count may then go up by two (an event dead-lettered one failure
		// early at worst, never a failure lost).
		err = quick.Do(ctx, func(ctx context.Context) error {
			var err error
			if rev == 0 {
				_, err = w.b.Failures.Create(ctx, key, val)
			} else {
				_, err = w.b.Failures.Update(ctx, key, val, rev)
			}
			return err
		})
		if err == nil {
			return n + 1, nil
		}
		if attempt >= 3 || !(errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)) {
			return 0, err
		}
	}
}

// forget deletes an event's failure count; a key left behind expires after
// FailuresMaxAge.
func (w *worker) forget(key string) {
	if w.b.Failures == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := quick.Do(ctx, func(ctx context.Context) error { return w.b.Failures.Delete(ctx, key) }); err != nil {
		w.log.Debug("failure count not deleted; it expires by itself", "key", key, "err", err)
	}
}

// deadLetter copies the payload and reason to the DLQ stream first, then
// terminates the message: on a work queue, Term deletes the payload. It
// reports whether the event was dead-lettered.
func (w *worker) deadLetter(msg jetstream.Msg, d Delivery, reason string) bool {
	dl := DeadLetter{Subject: d.Subject, Stream: w.cfg.Stream, StreamSeq: d.StreamSeq, Deliveries: d.Deliveries, Reason: reason, Payload: msg.Data()}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The message id makes a repeat harmless.
	if err := quick.Do(ctx, func(ctx context.Context) error {
		_, err := w.b.Publish(ctx, SubjectDLQ(w.cfg.Kind), fmt.Sprintf("dlq:%s:%d", w.cfg.Stream, dl.StreamSeq), dl)
		return err
	}); err != nil {
		w.log.Error("dead-letter publish failed; leaving the event for redelivery", "subject", d.Subject, "err", err)
		msg.NakWithDelay(30 * time.Second)
		return false
	}
	w.log.Error("event dead-lettered", "subject", d.Subject, "stream_seq", dl.StreamSeq, "deliveries", dl.Deliveries, "reason", reason)
	if w.cfg.Metrics != nil {
		w.cfg.Metrics.dead.WithLabelValues(w.cfg.Kind).Inc()
	}
	msg.TermWithReason(truncateReason(reason))
	return true
}

func truncateReason(s string) string {
	if len(s) > 200 {
		return s[:200]
	}
	return s
}

// quick repeats the worker's own small requests (failure counts, acks,
// dead letters) over transient errors, each attempt bounded so that a
// request lost with a node that went down is repeated after 2 s rather
// than after the caller's whole timeout.
var quick = RetryPolicy{First: 20 * time.Millisecond, Max: time.Second, Budget: 5 * time.Second, Attempt: 2 * time.Second}

// transientSnooze is how long an event whose handler met a transient error
// waits: 250–500 ms on its first delivery, doubling with each further
// delivery up to 2.5–5 s, so a cluster that stays unavailable is not
// hammered. Such an error says nothing about the event: a failure's
// exponential back-off (with its count toward MAX_DELIVER) is for events
// that fail however often they are tried.
func transientSnooze(deliveries uint64) time.Duration {
	return Jitter(min(500*time.Millisecond<<min(max(deliveries, 1)-1, 4), 5*time.Second))
}

// backoff grows with failures, jittered, capped at 5 minutes.
func backoff(failures int) time.Duration {
	return Jitter(min(time.Second<<min(max(failures, 0), 8), 5*time.Minute))
}

// Jitter is the fleet's one jitter policy for waits: a delay drawn evenly
// from [d/2, d], so waits on the same thing spread out and never exceed d.
func Jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

// Sleep waits d, or until ctx ends; then it returns ctx's cause.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
