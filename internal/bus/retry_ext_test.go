package bus_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// TestTransientErrorsSnooze: a handler failing with a cluster's transient
// error (no responders, as a read on an R3 stream gets now and then) more
// often than MaxDeliver is snoozed briefly each time, never counted as a
// failure, and acked once it succeeds: no dead letter, no failure count,
// and the redeliveries come within a second or so, not after a back-off.
func TestTransientErrorsSnooze(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{AckWait: 2 * time.Second, MaxDeliver: 2, Memory: true})
	reg := prometheus.NewRegistry()
	var mu sync.Mutex
	var times []time.Time
	var failures []int
	done := make(chan struct{})
	run(t, b, bus.NewWorkerMetrics(reg), 1, func(ctx context.Context, ev bus.DueEvent, d bus.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		times, failures = append(times, time.Now()), append(failures, d.Failures)
		if len(times) <= 3 {
			return fmt.Errorf("archive x: read messages: %w", nats.ErrNoResponders)
		}
		close(done)
		return nil
	})
	seq := publish(t, b, "transient", event)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("not acked")
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return queued(t, b) == 0 }, "the ack")
	mu.Lock()
	defer mu.Unlock()
	for i, f := range failures {
		if f != 0 {
			t.Fatalf("delivery %d saw %d failures, want 0 (all: %v)", i+1, f, failures)
		}
	}
	// Snoozes of 250–500 ms, 0.5–1 s and 1–2 s (plus a fetch's latency).
	if total := times[len(times)-1].Sub(times[0]); total > 5*time.Second {
		t.Fatalf("3 transient errors delayed the event %v", total)
	}
	if dls := deadLetters(t, b); len(dls) != 0 {
		t.Fatalf("dead-lettered: %+v", dls)
	}
	if n := failureCount(t, b, seq); n != -1 {
		t.Fatalf("failure count %d, want none", n)
	}
	if o := outcomes(t, reg); o["snooze"] != 3 || o["retry"] != 0 || o["ack"] != 1 || o["dead"] != 0 {
		t.Fatalf("outcomes %v", o)
	}
}
