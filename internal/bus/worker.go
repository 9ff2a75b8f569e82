package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Outcome tells the worker loop what to do with a message after the handler.
type Outcome int

const (
	// Ack: done (or nothing to do); the message is removed.
	Ack Outcome = iota
	// Retry: try again later (NakWithDelay with back-off); counts as a delivery.
	Retry
	// Dead: a permanent failure; the payload goes to the dead-letter stream.
	Dead
)

// Result is what a Handler returns.
type Result struct {
	Outcome Outcome
	Delay   time.Duration // for Retry; 0 picks a jittered default
	Err     error         // why, for Retry and Dead
}

// Handler processes one message. ctx is cancelled when the worker shuts down;
// the loop sends InProgress heartbeats while the handler runs.
type Handler func(ctx context.Context, msg jetstream.Msg) Result

// WorkerConfig shapes a worker loop.
type WorkerConfig struct {
	Stream, Consumer string
	Kind             string // dead-letter subject suffix, e.g. "due"
	Slots            int    // concurrent messages; each fetches one at a time
	Logger           *slog.Logger
	Metrics          *WorkerMetrics // optional
}

// WorkerMetrics counts what worker loops do.
type WorkerMetrics struct {
	handled *prometheus.CounterVec
	dead    *prometheus.CounterVec
	pending *prometheus.GaugeVec
}

// NewWorkerMetrics registers the worker metrics on reg, or reuses them when
// another service in the same process registered them already.
func NewWorkerMetrics(reg prometheus.Registerer) *WorkerMetrics {
	return &WorkerMetrics{
		handled: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_events_handled_total",
			Help: "Events handled by consumer and outcome (ack, retry, dead)."}, []string{"consumer", "outcome"})),
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

// Work runs Slots loops, each fetching one message, handling it and acking,
// until ctx is cancelled; then it waits for in-flight handlers to finish. A
// heartbeat (InProgress) runs every AckWait/3 while a handler works, so long
// builds are not redelivered. No message waits in a client buffer, so none
// expires there.
func (b *Bus) Work(ctx context.Context, cfg WorkerConfig, h Handler) error {
	cons, err := b.JS.Consumer(ctx, cfg.Stream, cfg.Consumer)
	if err != nil {
		return fmt.Errorf("consumer %s/%s: %w", cfg.Stream, cfg.Consumer, err)
	}
	if cfg.Slots < 1 {
		cfg.Slots = 1
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	var wg sync.WaitGroup
	if cfg.Metrics != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if info, err := cons.Info(ctx); err == nil {
					cfg.Metrics.pending.WithLabelValues(cfg.Consumer).Set(float64(info.NumPending + uint64(info.NumAckPending)))
				}
				sleep(ctx, 5*time.Second)
			}
		}()
	}
	for i := 0; i < cfg.Slots; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				batch, err := cons.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
				if err != nil {
					if ctx.Err() == nil {
						log.Warn("fetch failed", "consumer", cfg.Consumer, "err", err)
						sleep(ctx, time.Second)
					}
					continue
				}
				for msg := range batch.Messages() {
					b.handle(ctx, cfg, log, h, msg)
				}
				if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && ctx.Err() == nil {
					log.Debug("fetch batch error", "err", err)
				}
			}
		}()
	}
	wg.Wait()
	return nil
}

func (b *Bus) handle(ctx context.Context, cfg WorkerConfig, log *slog.Logger, h Handler, msg jetstream.Msg) {
	meta, _ := msg.Metadata()
	hbCtx, stopHB := context.WithCancel(context.Background())
	go func() {
		t := time.NewTicker(b.Config.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-hbCtx.Done():
				return
			case <-t.C:
				msg.InProgress()
			}
		}
	}()
	res := h(ctx, msg)
	stopHB()
	if cfg.Metrics != nil {
		cfg.Metrics.handled.WithLabelValues(cfg.Consumer, [...]string{"ack", "retry", "dead"}[res.Outcome]).Inc()
	}
	switch res.Outcome {
	case Ack:
		if err := msg.DoubleAck(context.Background()); err != nil {
			log.Warn("ack failed; the event will be redelivered and found done", "subject", msg.Subject(), "err", err)
		}
	case Retry:
		delivered := uint64(0)
		if meta != nil {
			delivered = meta.NumDelivered
		}
		if delivered >= uint64(b.Config.MaxDeliver) {
			b.deadLetter(cfg, log, msg, fmt.Sprintf("gave up after %d deliveries: %v", delivered, res.Err))
			return
		}
		d := res.Delay
		if d <= 0 {
			d = backoff(delivered)
		}
		log.Info("retrying later", "subject", msg.Subject(), "delivery", delivered, "in", d, "reason", res.Err)
		msg.NakWithDelay(d)
	case Dead:
		b.deadLetter(cfg, log, msg, res.Err.Error())
	}
}

// deadLetter copies the payload and reason to the DLQ stream first, then
// terminates the message: on a work queue, Term deletes the payload.
func (b *Bus) deadLetter(cfg WorkerConfig, log *slog.Logger, msg jetstream.Msg, reason string) {
	dl := DeadLetter{Subject: msg.Subject(), Stream: cfg.Stream, Reason: reason, Payload: msg.Data()}
	if meta, err := msg.Metadata(); err == nil {
		dl.StreamSeq, dl.Deliveries = meta.Sequence.Stream, meta.NumDelivered
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.Publish(ctx, SubjectDLQ(cfg.Kind), fmt.Sprintf("dlq:%s:%d", cfg.Stream, dl.StreamSeq), dl); err != nil {
		log.Error("dead-letter publish failed; leaving the event for redelivery", "subject", msg.Subject(), "err", err)
		msg.NakWithDelay(30 * time.Second)
		return
	}
	log.Error("event dead-lettered", "subject", msg.Subject(), "stream_seq", dl.StreamSeq, "deliveries", dl.Deliveries, "reason", reason)
	if cfg.Metrics != nil {
		cfg.Metrics.dead.WithLabelValues(cfg.Kind).Inc()
	}
	msg.TermWithReason(truncateReason(reason))
}

func truncateReason(s string) string {
	if len(s) > 200 {
		return s[:200]
	}
	return s
}

// backoff grows with deliveries, jittered, capped at 5 minutes.
func backoff(delivered uint64) time.Duration {
	d := time.Second << min(delivered, 8)
	d = min(d, 5*time.Minute)
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
