// Package archiver is the archiver service: it takes archive-due events one
// per worker slot, holds the community's lock, builds the archives on a local
// copy of the community's committed folder, stores the new artefacts in the
// object store under content-addressed names, commits the new state with a
// fenced compare-and-set and publishes archive-built.
package archiver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/lock"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
)

// Locker hands out per-community leases (Redis, or process-local in the
// single-process fleet).
type Locker interface {
	// Acquire takes the community's lock with a fence above floor.
	Acquire(ctx context.Context, key string, ttl time.Duration, floor int64) (lock.Lease, error)
}

// Sources gives the message source of a community.
type Sources interface {
	Source(c archive.CommunityID) archive.Source
}

// Config tunes the service.
type Config struct {
	WorkDir      string        // local cache of community folders
	Slots        int           // builds in parallel
	LockTTL      time.Duration // lease length; renewed every third
	AnnounceList [][]string    // torrent trackers; nil: status-go's
	CreatedBy    string
	BufferedIO   bool // never write archives with O_DIRECT
}

// Service is the archiver.
type Service struct {
	Bus      *bus.Bus
	Registry *registry.Registry
	State    *state.Store
	Sources  Sources
	Locker   Locker
	Config   Config
	Logger   *slog.Logger
	metrics  *metrics
}

type metrics struct {
	built    *prometheus.CounterVec
	duration prometheus.Histogram
	bytes    prometheus.Counter
	locks    *prometheus.CounterVec
	lost     prometheus.Counter
	worker   *bus.WorkerMetrics
}

// New builds the service and registers its metrics on reg.
func New(s Service, reg prometheus.Registerer) *Service {
	if s.Config.Slots < 1 {
		s.Config.Slots = 1
	}
	if s.Config.LockTTL == 0 {
		s.Config.LockTTL = 30 * time.Second
	}
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
	f := promauto.With(reg)
	s.metrics = &metrics{
		built: f.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_archives_built_total",
			Help: "Archive builds by result (built, empty, skipped, failed)."}, []string{"result"}),
		duration: f.NewHistogram(prometheus.HistogramOpts{Name: "archivefleet_archive_build_duration_seconds",
			Help: "Time from lock to commit of one build.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 16)}),
		bytes: f.NewCounter(prometheus.CounterOpts{Name: "archivefleet_archive_bytes_total",
			Help: "Bytes of archives appended to data files."}),
		locks: f.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_lock_acquire_total",
			Help: "Lock acquisitions by result (acquired, busy, error)."}, []string{"result"}),
		lost: f.NewCounter(prometheus.CounterOpts{Name: "archivefleet_lock_lost_total",
			Help: "Builds cancelled because their lock could not be renewed."}),
		worker: bus.NewWorkerMetrics(reg),
	}
	return &s
}

// Run consumes archive-due events until ctx is cancelled, then lets in-flight
// builds finish or hand their event back.
func (s *Service) Run(ctx context.Context) error {
	s.Logger.Info("archiver started", "slots", s.Config.Slots, "work_dir", s.Config.WorkDir)
	return s.Bus.Work(ctx, bus.WorkerConfig{
		Stream: bus.StreamDue, Consumer: bus.ConsumerArchiver, Kind: "due",
		Slots: s.Config.Slots, Logger: s.Logger, Metrics: s.metrics.worker,
	}, s.handle)
}

func (s *Service) handle(ctx context.Context, msg jetstream.Msg) bus.Result {
	var ev bus.DueEvent
	if err := json.Unmarshal(msg.Data(), &ev); err != nil {
		return bus.Result{Outcome: bus.Dead, Err: fmt.Errorf("decode due event: %w", err)}
	}
	c, err := archive.ParseCommunityID(ev.Community)
	if err != nil {
		return bus.Result{Outcome: bus.Dead, Err: err}
	}
	log := s.Logger.With("community", ev.Community, "range_end", ev.End)
	// A window ends when its end has passed; an end in the future (a bad
	// event or a clock far ahead) would archive windows that are still open.
	if limit := uint64(time.Now().Unix()) + 300; ev.End > limit {
		return bus.Result{Outcome: bus.Dead, Err: fmt.Errorf("range end %d is in the future (now %d)", ev.End, limit-300)}
	}
	res := s.process(ctx, log, c, ev)
	switch res.Outcome {
	case bus.Dead:
		s.metrics.built.WithLabelValues("failed").Inc()
	case bus.Retry:
		if ctx.Err() != nil {
			// Shutting down: hand the event back at once.
			res.Delay = time.Millisecond
		}
	}
	return res
}

func (s *Service) process(ctx context.Context, log *slog.Logger, c archive.CommunityID, ev bus.DueEvent) bus.Result {
	com, err := s.Registry.Get(ctx, c)
	if errors.Is(err, registry.ErrNotFound) {
		log.Info("community not registered: event dropped")
		return bus.Result{Outcome: bus.Ack}
	}
	if errors.Is(err, registry.ErrCorrupt) {
		return bus.Result{Outcome: bus.Dead, Err: err}
	}
	if err != nil {
		return bus.Result{Outcome: bus.Retry, Err: err}
	}
	if com.Disabled {
		log.Info("community disabled: event dropped")
		return bus.Result{Outcome: bus.Ack}
	}
	st, _, err := s.State.GetBuild(ctx, c.String())
	if err != nil {
		return bus.Result{Outcome: bus.Retry, Err: err}
	}
	if st.LastEnd >= ev.End {
		log.Debug("range already archived", "last_end", st.LastEnd)
		s.metrics.built.WithLabelValues("skipped").Inc()
		return bus.Result{Outcome: bus.Ack}
	}

	lease, err := s.Locker.Acquire(ctx, c.String(), s.Config.LockTTL, st.Fence)
	switch {
	case errors.Is(err, lock.ErrBusy):
		s.metrics.locks.WithLabelValues("busy").Inc()
		return bus.Result{Outcome: bus.Retry, Delay: time.Second + rand.N(2*time.Second), Err: err}
	case err != nil:
		s.metrics.locks.WithLabelValues("error").Inc()
		// Never build without the lock: wait for the lock service to return.
		return bus.Result{Outcome: bus.Retry, Delay: 3*time.Second + rand.N(2*time.Second), Err: err}
	}
	s.metrics.locks.WithLabelValues("acquired").Inc()
	hctx, stop := lock.Hold(ctx, lease, s.Config.LockTTL)
	defer func() {
		stop()
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := lease.Release(rctx); err != nil {
			log.Warn("lock release failed; it expires by itself", "err", err)
		}
	}()
	log = log.With("fence", lease.Fence())
	t0 := time.Now()
	res, err := s.build(hctx, log, com, ev, lease.Fence())
	if err != nil {
		if cause := context.Cause(hctx); errors.Is(cause, lock.ErrLost) {
			s.metrics.lost.Inc()
			log.Error("lock lost during build: build abandoned", "err", cause)
			return bus.Result{Outcome: bus.Retry, Err: cause}
		}
		if errors.Is(err, errPermanent) {
			return bus.Result{Outcome: bus.Dead, Err: err}
		}
		log.Warn("build failed", "err", err)
		return bus.Result{Outcome: bus.Retry, Err: err}
	}
	s.metrics.duration.Observe(time.Since(t0).Seconds())
	s.metrics.built.WithLabelValues(res).Inc()
	return bus.Result{Outcome: bus.Ack}
}

// errPermanent marks failures a retry cannot fix.
var errPermanent = errors.New("permanent failure")
