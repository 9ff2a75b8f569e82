package bus_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// run starts a worker on the due stream until the returned stop is called
// (or the test ends); stop waits for the worker to return.
func run(t *testing.T, b *bus.Bus, metrics *bus.WorkerMetrics, slots int, h func(context.Context, bus.DueEvent, bus.Delivery) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- bus.Work(ctx, b, bus.WorkerConfig{Stream: bus.StreamDue, Consumer: bus.ConsumerArchiver, Kind: "due",
			Event: "due event", Slots: slots, Logger: testenv.Logger(), Metrics: metrics}, h)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("worker: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func publish(t *testing.T, b *bus.Bus, id string, data []byte) uint64 {
	t.Helper()
	ack, err := b.JS.Publish(context.Background(), bus.SubjectDue("c"), data, jetstream.WithMsgID(id))
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

var event = []byte(`{"community":"c","end":7}`)

func deadLetters(t *testing.T, b *bus.Bus) []bus.StoredDeadLetter {
	t.Helper()
	dls, err := bus.DeadLetters(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	return dls
}

func queued(t *testing.T, b *bus.Bus) uint64 {
	t.Helper()
	s, err := b.JS.Stream(context.Background(), bus.StreamDue)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// failureCount reads an event's failure count from the bucket (-1: none).
func failureCount(t *testing.T, b *bus.Bus, seq uint64) int {
	t.Helper()
	e, err := b.Failures.Get(context.Background(), bus.ConsumerArchiver+"."+strconv.FormatUint(seq, 10))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return -1
	}
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(string(e.Value()))
	return n
}

func outcomes(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "archivefleet_events_handled_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" {
					out[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

// TestSnoozeDoesNotUseDeliveries: an event snoozed and failed more often
// than MaxDeliver deliveries, but with fewer failures than MaxDeliver, is
// handled to the end and never dead-lettered; the handler sees its
// deliveries and failures so far, and the failure count is gone once acked.
// (With the server counting deliveries, the old worker stopped at 3.)
func TestSnoozeDoesNotUseDeliveries(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{AckWait: 2 * time.Second, MaxDeliver: 3, Memory: true})
	reg := prometheus.NewRegistry()
	// Delivery by delivery: s = snooze, f = failure, a = ack.
	const plan = "sfssfsssa"
	type seen struct {
		deliveries uint64
		failures   int
	}
	var mu sync.Mutex
	var got []seen
	done := make(chan struct{})
	run(t, b, bus.NewWorkerMetrics(reg), 2, func(ctx context.Context, ev bus.DueEvent, d bus.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, seen{d.Deliveries, d.Failures})
		if ev.Community != "c" || ev.End != 7 || d.Subject != bus.SubjectDue("c") {
			t.Errorf("event %+v, delivery %+v", ev, d)
		}
		switch plan[min(len(got), len(plan))-1] {
		case 's':
			return bus.Snooze(20*time.Millisecond, "waiting for something")
		case 'f':
			return bus.RetryAfter(20*time.Millisecond, errors.New("boom"))
		}
		close(done)
		return nil
	})
	seq := publish(t, b, "snooze", event)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("not acked; deliveries so far %+v", got)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return queued(t, b) == 0 }, "the ack")
	mu.Lock()
	defer mu.Unlock()
	failures := 0
	for i, s := range got {
		if s.deliveries != uint64(i+1) || s.failures != failures {
			t.Fatalf("delivery %d saw %+v, want %d deliveries and %d failures (all: %+v)", i+1, s, i+1, failures, got)
		}
		if plan[i] == 'f' {
			failures++
		}
	}
	if len(got) != len(plan) {
		t.Fatalf("%d deliveries, want %d", len(got), len(plan))
	}
	if dls := deadLetters(t, b); len(dls) != 0 {
		t.Fatalf("dead-lettered: %+v", dls)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return failureCount(t, b, seq) == -1 }, "the failure count's deletion")
	if o := outcomes(t, reg); o["snooze"] != 6 || o["retry"] != 2 || o["ack"] != 1 || o["dead"] != 0 {
		t.Fatalf("outcomes %v", o)
	}
}

// TestFailuresDeadLetter: failures, not deliveries, reach MaxDeliver; the
// dead letter keeps the handler's error text and the delivery count.
func TestFailuresDeadLetter(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{AckWait: 2 * time.Second, MaxDeliver: 3, Memory: true})
	sentinel := errors.New("disk on fire")
	var calls atomic.Int32
	run(t, b, nil, 1, func(ctx context.Context, ev bus.DueEvent, d bus.Delivery) error {
		if calls.Add(1)%2 == 0 {
			return bus.Snooze(10*time.Millisecond, "lock busy")
		}
		return bus.RetryAfter(10*time.Millisecond, fmt.Errorf("build: %w", sentinel))
	})
	seq := publish(t, b, "fail", event)
	testenv.Eventually(t, 30*time.Second, func() bool { return len(deadLetters(t, b)) == 1 }, "a dead letter")
	dl := deadLetters(t, b)[0]
	if dl.StreamSeq != seq || dl.Deliveries != 5 || !strings.Contains(dl.Reason, "gave up after 3 failures") ||
		!strings.Contains(dl.Reason, "build: disk on fire") || string(dl.Payload) != string(event) {
		t.Fatalf("dead letter %+v", dl)
	}
	if n := calls.Load(); n != 5 {
		t.Fatalf("%d calls, want 5 (3 failures, 2 snoozes)", n)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return failureCount(t, b, seq) == -1 }, "the failure count's deletion")
	if queued(t, b) != 0 {
		t.Fatal("dead-lettered event still queued")
	}
}

// TestDeadLetteredAtOnce: an undecodable payload, a Permanent error, an error
// wrapping ErrMalformed (however deep) and a panic each dead-letter their
// event on its first delivery, with the reason kept.
func TestDeadLetteredAtOnce(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{AckWait: 2 * time.Second, MaxDeliver: 5, Memory: true})
	var calls atomic.Int32
	run(t, b, nil, 2, func(ctx context.Context, ev bus.DueEvent, d bus.Delivery) error {
		calls.Add(1)
		switch ev.Community {
		case "permanent":
			return fmt.Errorf("outer: %w", bus.Permanent(errors.New("cannot ever work")))
		case "malformed":
			return fmt.Errorf("outer: %w", fmt.Errorf("inner: %w", bus.ErrMalformed))
		case "panic":
			var m map[string]int
			m["boom"]++
		}
		return errors.New("unexpected event")
	})
	tests := []struct {
		payload string
		want    []string
	}{
		{`{not json`, []string{"decode due event: ", "invalid character"}},
		{`{"community":"permanent"}`, []string{"outer: cannot ever work"}},
		{`{"community":"malformed"}`, []string{"outer: inner: malformed event"}},
		{`{"community":"panic"}`, []string{"handler panic: assignment to entry in nil map", "goroutine", "worker_test.go"}},
	}
	for i, tt := range tests {
		publish(t, b, strconv.Itoa(i), []byte(tt.payload))
	}
	testenv.Eventually(t, 30*time.Second, func() bool { return len(deadLetters(t, b)) == len(tests) }, "dead letters")
	for _, tt := range tests {
		var dl *bus.StoredDeadLetter
		for _, l := range deadLetters(t, b) {
			if string(l.Payload) == tt.payload {
				dl = &l
			}
		}
		if dl == nil {
			t.Fatalf("no dead letter for %s", tt.payload)
		}
		for _, w := range tt.want {
			if !strings.Contains(dl.Reason, w) {
				t.Errorf("%s: reason %q lacks %q", tt.payload, dl.Reason, w)
			}
		}
		if dl.Deliveries != 1 {
			t.Errorf("%s: dead-lettered after %d deliveries, want 1", tt.payload, dl.Deliveries)
		}
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("handler called %d times, want 3 (never for the undecodable payload)", n)
	}
}

func TestErrorChains(t *testing.T) {
	base := errors.New("base")
	p := fmt.Errorf("ctx: %w", bus.Permanent(base))
	if !errors.Is(p, base) || !bus.IsPermanent(p) || p.Error() != "ctx: base" {
		t.Fatalf("Permanent: %v", p)
	}
	m := fmt.Errorf("a: %w", fmt.Errorf("b: %w", bus.ErrMalformed))
	if !bus.IsPermanent(m) || !errors.Is(m, bus.ErrMalformed) {
		t.Fatal("an error wrapping ErrMalformed is not permanent")
	}
	r := bus.RetryAfter(time.Second, base)
	if !errors.Is(r, base) || bus.IsPermanent(r) || r.Error() != "base" {
		t.Fatalf("RetryAfter: %v", r)
	}
	var s *bus.SnoozeError
	if err := fmt.Errorf("x: %w", bus.Snooze(time.Second, "wait")); !errors.As(err, &s) || s.Delay != time.Second || bus.IsPermanent(err) {
		t.Fatalf("Snooze: %v", err)
	}
}

// TestFailuresOutliveTheWorker: the failure count is kept in NATS, so a new
// worker (a restarted process) sees it; a handler interrupted by shutdown
// counts no failure.
func TestFailuresOutliveTheWorker(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{AckWait: 2 * time.Second, MaxDeliver: 5, Memory: true})
	seq := publish(t, b, "restart", event)
	stop := run(t, b, nil, 1, func(ctx context.Context, ev bus.DueEvent, d bus.Delivery) error {
		return bus.RetryAfter(3*time.Second, errors.New("first attempt failed"))
	})
	testenv.Eventually(t, 10*time.Second, func() bool { return failureCount(t, b, seq) == 1 }, "a recorded failure")
	stop()

	entered := make(chan bus.Delivery, 1)
	stop = run(t, b, nil, 1, func(ctx context.Context, ev bus.DueEvent, d bus.Delivery) error {
		entered <- d
		<-ctx.Done()
		return fmt.Errorf("interrupted: %w", ctx.Err())
	})
	var d bus.Delivery
	select {
	case d = <-entered:
	case <-time.After(15 * time.Second):
		t.Fatal("not redelivered to the second worker")
	}
	if d.Deliveries != 2 || d.Failures != 1 || d.StreamSeq != seq {
		t.Fatalf("second worker saw %+v, want delivery 2 with 1 failure", d)
	}
	stop()

	got := make(chan bus.Delivery, 1)
	run(t, b, nil, 1, func(ctx context.Context, ev bus.DueEvent, d bus.Delivery) error {
		got <- d
		return nil
	})
	select {
	case d = <-got:
	case <-time.After(15 * time.Second):
		t.Fatal("not redelivered to the third worker")
	}
	if d.Deliveries != 3 || d.Failures != 1 {
		t.Fatalf("third worker saw %+v, want delivery 3 still with 1 failure (a shutdown is no failure)", d)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return failureCount(t, b, seq) == -1 }, "the failure count's deletion")
}

// TestHeartbeatFollowsLiveAckWait: a handler running for several ack waits
// is not redelivered meanwhile, with the heartbeat following the ack wait
// the server applies, read from the live consumer, not this process's
// Config.AckWait (another deployment's Setup may have set it): a plain
// AckWait, and an old-style BackOff list (whose first entry the server uses).
func TestHeartbeatFollowsLiveAckWait(t *testing.T) {
	tests := []struct {
		name    string
		ackWait time.Duration
		backOff []time.Duration
		work    time.Duration
	}{
		{"ack wait", 2 * time.Second, nil, 8 * time.Second},
		{"backoff", 0, []time.Duration{time.Second, 5 * time.Second}, 4 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// This process thinks the ack wait is 30 s (a heartbeat every 10 s).
			b := testenv.Bus(t, testenv.NATS(t), bus.Config{AckWait: 30 * time.Second, MaxDeliver: 5, Memory: true})
			ctx := context.Background()
			cc := jetstream.ConsumerConfig{Durable: bus.ConsumerArchiver, AckPolicy: jetstream.AckExplicitPolicy,
				AckWait: tt.ackWait, BackOff: tt.backOff, MaxDeliver: -1, MaxAckPending: 1000}
			if _, err := b.JS.CreateOrUpdateConsumer(ctx, bus.StreamDue, cc); err != nil {
				t.Fatal(err)
			}
			var calls atomic.Int32
			done := make(chan bus.Delivery, 2)
			run(t, b, nil, 2, func(ctx context.Context, ev bus.DueEvent, d bus.Delivery) error {
				calls.Add(1)
				time.Sleep(tt.work)
				done <- d
				return nil
			})
			publish(t, b, "long", event)
			var d bus.Delivery
			select {
			case d = <-done:
			case <-time.After(tt.work + 10*time.Second):
				t.Fatal("handler did not finish")
			}
			time.Sleep(500 * time.Millisecond)
			if n := calls.Load(); n != 1 || d.Deliveries != 1 {
				t.Fatalf("%d calls, delivery %d: redelivered while the handler ran", n, d.Deliveries)
			}
			testenv.Eventually(t, 5*time.Second, func() bool { return queued(t, b) == 0 }, "the ack")
		})
	}
}

// TestSetupUpdatesConsumers: Setup turns an existing deployment's consumers
// (server-side MaxDeliver and a BackOff list) into ones the workers pace, and
// creates the failure bucket with an expiry for orphans.
func TestSetupUpdatesConsumers(t *testing.T) {
	ns := testenv.NATS(t)
	b := testenv.Bus(t, ns, bus.Config{})
	ctx := context.Background()
	old := []time.Duration{5 * time.Second, 15 * time.Second, time.Minute, 5 * time.Minute}
	for _, c := range []struct{ stream, name string }{{bus.StreamDue, bus.ConsumerArchiver}, {bus.StreamSeeding, bus.ConsumerAnnouncer}} {
		if _, err := b.JS.CreateOrUpdateConsumer(ctx, c.stream, jetstream.ConsumerConfig{Durable: c.name,
			AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxDeliver: 20, BackOff: old, MaxAckPending: 1000}); err != nil {
			t.Fatalf("old-style consumer: %v", err)
		}
	}
	b = testenv.Bus(t, ns, bus.Config{AckWait: 7 * time.Second})
	for _, c := range []struct{ stream, name string }{{bus.StreamDue, bus.ConsumerArchiver}, {bus.StreamSeeding, bus.ConsumerAnnouncer}} {
		cons, err := b.JS.Consumer(ctx, c.stream, c.name)
		if err != nil {
			t.Fatal(err)
		}
		cfg := cons.CachedInfo().Config
		if cfg.MaxDeliver != -1 || len(cfg.BackOff) != 0 || cfg.AckWait != 7*time.Second {
			t.Fatalf("%s after Setup: max deliver %d, backoff %v, ack wait %v", c.name, cfg.MaxDeliver, cfg.BackOff, cfg.AckWait)
		}
	}
	st, err := b.Failures.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Bucket() != bus.BucketFailures || st.TTL() != bus.FailuresMaxAge || st.History() != 1 {
		t.Fatalf("failure bucket %s: ttl %v, history %d", st.Bucket(), st.TTL(), st.History())
	}
}

// TestRawWaku: the waku consumer starts at new announcements (nothing
// published before its creation is replayed) and Work[Raw] hands over the
// subject, headers and bytes untouched.
func TestRawWaku(t *testing.T) {
	ns := testenv.NATS(t)
	ctx := context.Background()
	b := testenv.Bus(t, ns, bus.Config{AckWait: 2 * time.Second, Memory: true})
	// Recreate the consumer after an old announcement: DeliverNew skips it.
	if _, err := b.JS.Publish(ctx, bus.SubjectAnnounced("0xold"), []byte("old")); err != nil {
		t.Fatal(err)
	}
	if err := b.JS.DeleteConsumer(ctx, bus.StreamAnnounced, bus.ConsumerWaku); err != nil {
		t.Fatal(err)
	}
	b = testenv.Bus(t, ns, bus.Config{AckWait: 2 * time.Second, Memory: true})
	cons, err := b.JS.Consumer(ctx, bus.StreamAnnounced, bus.ConsumerWaku)
	if err != nil {
		t.Fatal(err)
	}
	if c := cons.CachedInfo().Config; c.DeliverPolicy != jetstream.DeliverNewPolicy || c.AckPolicy != jetstream.AckExplicitPolicy || c.AckWait != 2*time.Second || c.MaxDeliver != -1 {
		t.Fatalf("waku consumer: %+v", c)
	}
	m := nats.NewMsg(bus.SubjectAnnounced("0xnew"))
	m.Header.Set("Archivefleet-Clock", "42")
	m.Data = []byte{0, 1, 2, 0xff} // not JSON
	if _, err := b.JS.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	got := make(chan bus.Raw, 4)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- bus.Work(wctx, b, bus.WorkerConfig{Stream: bus.StreamAnnounced, Consumer: bus.ConsumerWaku, Kind: "waku",
			Logger: testenv.Logger()}, func(_ context.Context, ev bus.Raw, _ bus.Delivery) error {
			got <- ev
			return nil
		})
	}()
	defer func() { cancel(); <-done }()
	select {
	case ev := <-got:
		if ev.Subject != bus.SubjectAnnounced("0xnew") || ev.Header.Get("Archivefleet-Clock") != "42" || string(ev.Data) != string(m.Data) {
			t.Fatalf("raw event: %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
	}
	select {
	case ev := <-got:
		t.Fatalf("second event %+v (the old one replayed?)", ev)
	case <-time.After(500 * time.Millisecond):
	}
}
