// Package archiver is the archiver service: it takes archive-due events one
// per worker slot, holds the community's lock, builds the archives on a local
// copy of the community's committed folder, stores the new artefacts in the
// object store under content-addressed names, commits the new state with a
// fenced compare-and-set and publishes archive-built.
package archiver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/atomicfile"
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

// Sources is the message store as a build reads it: bounded by the stream
// sequence the build saw (its watermark), so that messages stored later are
// found as late by the next build instead of being lost.
type Sources interface {
	// Fence marks the message stream for a build of community c and
	// returns the build's watermark: reads up to it see every message
	// stored before it.
	Fence(ctx context.Context, c archive.CommunityID) (uint64, error)
	// Between yields a community's messages stored in (after, upto].
	Between(c archive.CommunityID, after, upto uint64) archive.Source
	// LateWindows finds the messages stored in (after, upto] with a
	// timestamp in [since, end), and the interval windows they fall in.
	LateWindows(ctx context.Context, c archive.CommunityID, after, upto, since, end uint64, interval time.Duration) ([]archive.Window, int, error)
}

// Defaults of Config's fields; a zero field means its default.
const (
	DefaultSlots   = 1
	DefaultLockTTL = 30 * time.Second
)

// Config tunes the service. A zero field means its default.
type Config struct {
	WorkDir      string        // local cache of community folders
	Slots        int           // builds in parallel
	LockTTL      time.Duration // lease length; renewed every third
	AnnounceList [][]string    // torrent trackers; nil: status-go's
	CreatedBy    string
	BufferedIO   bool // never write archives with O_DIRECT
	// Settle is how long after a window's end it may be built, so messages
	// in flight land in their window first; an event whose End + Settle is
	// still ahead is snoozed until then. The default is no settle.
	Settle time.Duration
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	c.Slots = cmp.Or(c.Slots, DefaultSlots)
	c.LockTTL = cmp.Or(c.LockTTL, DefaultLockTTL)
	return c
}

// validate reports a setting no default can fix.
func (c Config) validate() error {
	switch {
	case c.Slots < 0:
		return fmt.Errorf("archiver: %d slots", c.Slots)
	case c.LockTTL < 0:
		return fmt.Errorf("archiver: lock TTL %v is negative", c.LockTTL)
	case c.Settle < 0:
		return fmt.Errorf("archiver: settle %v is negative", c.Settle)
	}
	return nil
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
	leftOut  prometheus.Counter
	worker   *bus.WorkerMetrics
}

// New builds the service and registers its metrics on reg.
func New(s Service, reg prometheus.Registerer) *Service {
	s.Config = s.Config.withDefaults()
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
		leftOut: f.NewCounter(prometheus.CounterOpts{Name: "archivefleet_messages_left_out_total",
			Help: "Stored messages a build could not put in any archive (over the size cap, foreign topic). Ingest refuses these, so it stays 0."}),
		worker: bus.NewWorkerMetrics(reg),
	}
	return &s
}

// Run consumes archive-due events until ctx is cancelled, then lets in-flight
// builds finish or hand their event back.
func (s *Service) Run(ctx context.Context) error {
	if err := s.Config.validate(); err != nil {
		return err
	}
	s.sweep()
	s.Logger.Info("archiver started", "slots", s.Config.Slots, "work_dir", s.Config.WorkDir, "settle", s.Config.Settle)
	return bus.KindDue.Work(ctx, s.Bus, bus.Workers{Slots: s.Config.Slots, Logger: s.Logger, Metrics: s.metrics.worker}, s.handle)
}

// sweep deletes what interrupted writes left in the work dir, once at
// start, so a build touches its own community's files only (listing the
// shared torrents folder on every build cost as much as the fleet is big).
func (s *Service) sweep() {
	l := s.layout()
	atomicfile.SweepStale(l.TorrentDir)
	s.marks().SweepStale()
	if ents, err := os.ReadDir(l.DataDir); err == nil {
		for _, e := range ents {
			if e.IsDir() {
				atomicfile.SweepStale(filepath.Join(l.DataDir, e.Name()))
			}
		}
	}
}

// handle maps every outcome onto the worker's contract: nil acks; waiting
// (a busy lock, an unreachable Redis or NATS, a window still settling, a
// shutdown) snoozes without counting a failure; a malformed event is
// dead-lettered at once; a build that fails counts toward MAX_DELIVER.
func (s *Service) handle(ctx context.Context, ev bus.DueEvent, d bus.Delivery) error {
	c, err := archive.ParseCommunityID(ev.Community)
	if err != nil {
		return fmt.Errorf("%w: %w", bus.ErrMalformed, err)
	}
	log := s.Logger.With("community", ev.Community, "range_end", ev.End)
	// A window ends when its end has passed; an end far in the future (a
	// bad event or a clock far ahead) would archive windows that are still
	// open. A near one (clock skew) waits below like an unsettled window.
	if limit := uint64(time.Now().Unix()) + 300; ev.End > limit {
		return fmt.Errorf("%w: range end %d is in the future (now %d)", bus.ErrMalformed, ev.End, limit-300)
	}
	err = s.process(ctx, log, c, ev, d)
	var snooze *bus.SnoozeError
	switch {
	case err == nil:
	case ctx.Err() != nil && !bus.IsPermanent(err):
		// Shutting down: hand the event back at once, not as a failure
		// (whatever failed, the cancellation may be why).
		return bus.Snooze(0, "archiver shutting down")
	case errors.As(err, &snooze):
	case bus.IsTransient(err) && !bus.IsPermanent(err):
		// NATS hiccuped past the short retries (a leader election, a node
		// restarting): the worker brings the event back shortly without
		// counting a failure (worker.go), and it is no failed build either.
	default:
		s.metrics.built.WithLabelValues("failed").Inc()
	}
	return err
}

// settledAt is when the window ending at end may be built: messages still in
// flight when it closed have had Settle to land in it.
func (s *Service) settledAt(end uint64) time.Time {
	return time.Unix(int64(end), 0).Add(s.Config.Settle)
}

func (s *Service) process(ctx context.Context, log *slog.Logger, c archive.CommunityID, ev bus.DueEvent, d bus.Delivery) error {
	com, err := s.Registry.Get(ctx, c)
	if errors.Is(err, registry.ErrNotFound) {
		log.Info("community not registered: event dropped")
		return nil
	}
	if err != nil {
		return bus.Unavailable("registry read", err)
	}
	if com.Disabled {
		log.Info("community disabled: event dropped")
		return nil
	}
	st, _, err := s.State.GetBuild(ctx, c.String())
	if err != nil {
		return bus.Unavailable("state read", err)
	}
	if st.LastEnd >= ev.End {
		log.Debug("range already archived", "last_end", st.LastEnd)
		s.metrics.built.WithLabelValues("skipped").Inc()
		return nil
	}
	if at := s.settledAt(ev.End); time.Now().Before(at) {
		// E.g. archivectl trigger (End = now) with a settle time: build once
		// the window has settled. The snooze ends then, so this is logged
		// once per event.
		wait := time.Until(at) + 100*time.Millisecond
		lvl := slog.LevelInfo
		if wait < time.Second && d.Deliveries > 1 {
			lvl = slog.LevelDebug // woken a hair early: not news
		}
		log.Log(ctx, lvl, "window not settled yet: build snoozed", "build_at", at.UTC().Format(time.RFC3339), "settle", s.Config.Settle)
		return bus.Snooze(wait, fmt.Sprintf("window ending %d settles at %s", ev.End, at.UTC().Format(time.RFC3339)))
	}

	lease, err := s.Locker.Acquire(ctx, c.String(), s.Config.LockTTL, st.Fence)
	switch {
	case errors.Is(err, lock.ErrBusy):
		s.metrics.locks.WithLabelValues("busy").Inc()
		return bus.SnoozeFor(lockBusySnooze, "lock busy: "+err.Error())
	case err != nil:
		s.metrics.locks.WithLabelValues("error").Inc()
		// Never build without the lock: wait for the lock service to return.
		return bus.SnoozeFor(bus.UnavailableSnooze, "lock service unavailable: "+err.Error())
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
			// A snooze, not a failure: the lease lapses when Redis becomes
			// unreachable mid-build (renewals fail) or another holder takes
			// an expired lease over; neither says anything about this
			// event, and counting it would dead-letter valid windows while
			// Redis flaps. The build was abandoned before its commit (the
			// fenced compare-and-set rejects a late one anyway); whoever
			// holds the lock next builds the window, and this event then
			// finds it done.
			s.metrics.lost.Inc()
			log.Error("lock lost during build: build abandoned", "err", cause)
			return bus.SnoozeFor(lockBusySnooze, "lock lost during build: "+cause.Error())
		}
		switch {
		case ctx.Err() != nil:
		case bus.IsTransient(err):
			log.Info("build interrupted by a transient NATS error; the event comes back shortly", "err", err)
		default:
			log.Warn("build failed", "err", err)
		}
		return err
	}
	s.metrics.duration.Observe(time.Since(t0).Seconds())
	s.metrics.built.WithLabelValues(res).Inc()
	return nil
}

// lockBusySnooze is how long an event whose community another build holds
// waits: 1–2 s.
const lockBusySnooze = 2 * time.Second
