// Package pruner is the archiver's message pruner: it keeps MESSAGES
// bounded by removing each community's archived records a grace period
// after the build that archived them was committed, on one JetStream
// message schedule per community (its own stream, MESSAGES_PRUNE, and
// consumer). It runs in the archiver process.
package pruner

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/messages"
	"github.com/archivefleet/archivefleet/internal/state"
)

// Pruner defaults, in one place.
const (
	// DefaultGrace is how long a committed state waits before the
	// records it archived are removed. Re-sends within it are duplicates
	// (kept once); after it a re-sent message is archived a second time (see
	// messages.Store.Prune). Ingest retries and several Waku replicas come within
	// seconds and the Waku back-fill re-reads 5 minutes before its last
	// complete pass, so the grace is the back-fill outage (a store node
	// failing every pass) the fleet rides out without such duplicates: two
	// days, a weekend, and as long as the seeders keep serving a superseded
	// magnet (SNAPSHOT_GRACE). The stream then holds the open windows plus
	// about this much.
	DefaultGrace = 48 * time.Hour
	// Off as Config.Grace keeps every record, as before #13.
	Off = time.Duration(-1)
	// DefaultSlots is how many prunes run at once: each is a scan of
	// one community's held records and a few requests.
	DefaultSlots = 1
)

// Config tunes the Pruner.
type Config struct {
	// Grace is how long after a state's commit its records are removed: 0
	// means DefaultGrace, negative (Off) keeps every record.
	Grace time.Duration
	// Slots is how many events are handled at once per consumer; 0 means
	// DefaultSlots.
	Slots int
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	c.Grace = cmp.Or(c.Grace, DefaultGrace)
	c.Slots = cmp.Or(c.Slots, DefaultSlots)
	return c
}

// validate reports a setting no default can fix.
func (c Config) validate() error {
	if c.Slots < 0 {
		return fmt.Errorf("pruner: %d slots", c.Slots)
	}
	return nil
}

// Pruner bounds the message store: it removes each community's archived
// records once their state has been committed for the grace period (the
// retention model is documented on messages.Store.Prune).
//
// Trigger: one durable timer per community, a JetStream message schedule
// ("@at commit+grace", nats-server 2.12 or later) on
// archive.prune.schedule.<c>, which the server fires onto
// archive.prune.due.<c> as a PruneEvent carrying the cutoff to prune. Nothing
// scans the communities and nothing waits in a consumer for days: a pending
// schedule is one stored message per community, kept by the server across
// restarts and replicated like any other; the work is proportional to the
// builds. Two consumers named pruner feed it, both through bus.Work:
//
//   - on ARCHIVE_BUILT, each committed build schedules its prune, unless the
//     community already has one pending (the publish expects the schedule
//     subject to be empty). A newer schedule replacing the pending one would
//     never fire for a community whose interval is shorter than the grace;
//     keeping the older one instead, with its own cutoff, prunes at least
//     every grace period.
//   - on archive.prune.due.<c>, the fired event prunes: up to the community's
//     current committed state if that is itself past its grace, else up to
//     the event's cutoff (bounded by the current state, which is what says
//     what is archived); then it schedules the current state's prune if that
//     covers more. So a community always has a prune pending once something
//     is archived and not pruned, and holds at most the open windows, what
//     was archived in the last grace period and one interval more.
//
// A snoozing worker on ARCHIVE_BUILT (waiting commit+grace inside the
// consumer) was the alternative: every community would hold an unacked event
// for two days (past MaxAckPending with a thousand communities), each
// redelivered on every snooze, and ARCHIVE_BUILT keeps one event per
// community, so an hourly community's event would be replaced before its
// grace ran out, for ever. A missed archive-built event (its publish failed
// after the commit) only delays the community's prune to its next build.
type Pruner struct {
	Store  *messages.Store
	Config Config
	Logger *slog.Logger

	metrics *pruneMetrics
	worker  *bus.WorkerMetrics
	now     func() time.Time
}

type pruneMetrics struct {
	records *prometheus.CounterVec
	bytes   prometheus.Counter
	bodies  prometheus.Counter
	prunes  *prometheus.CounterVec
	lag     prometheus.Histogram
}

// Prune results (archivefleet_message_prunes_total's result label).
const (
	pruneResultPruned  = "pruned"  // records removed
	pruneResultNothing = "nothing" // nothing left to remove
	pruneResultStale   = "stale"   // cutoff refused (messages.ErrStaleCutoff)
	pruneResultFailed  = "failed"  // NATS failed; retried
)

// New makes a Pruner and registers its metrics on reg.
func New(s *messages.Store, cfg Config, logger *slog.Logger, reg prometheus.Registerer) *Pruner {
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.Default()
	}
	m := &pruneMetrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_messages_pruned_total",
			Help: "Archived message records removed from the MESSAGES stream, by how (purge: a day's records below a sequence in one request; delete: one by one)."},
			[]string{"how"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "archivefleet_messages_pruned_bytes_total",
			Help: "Message bytes of the records removed (record data; subjects, headers and stream overhead come on top)."}),
		bodies: prometheus.NewCounter(prometheus.CounterOpts{Name: "archivefleet_message_payloads_pruned_total",
			Help: "Large-message payload objects deleted with their records."}),
		prunes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_message_prunes_total",
			Help: "Prunes of one community by result (pruned, nothing, stale: cutoff refused, failed: retried)."}, []string{"result"}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "archivefleet_message_prune_lag_seconds",
			Help:    "Time from a cutoff becoming prunable (commit + grace) to its prune.",
			Buckets: prometheus.ExponentialBuckets(0.25, 4, 10)}),
	}
	reg.MustRegister(m.records, m.bytes, m.bodies, m.prunes, m.lag)
	for _, r := range []string{pruneResultPruned, pruneResultNothing, pruneResultStale, pruneResultFailed} {
		m.prunes.WithLabelValues(r)
	}
	m.records.WithLabelValues("purge")
	m.records.WithLabelValues("delete")
	return &Pruner{Store: s, Config: cfg, Logger: logger, metrics: m, worker: bus.NewWorkerMetrics(reg), now: time.Now}
}

// Enabled reports whether the pruner removes anything (Grace is not Off).
func (p *Pruner) Enabled() bool { return p.Config.Grace >= 0 }

// Run sets up the pruner's topology (bus.SetupPrune) and handles archive-built
// and prune events until ctx ends. Disabled, it logs so and waits for ctx.
//
// A transient NATS error during the set-up (a cluster electing a leader, a
// node restarting) is waited out, however long it lasts, rather than
// stopping the archiver the pruner runs beside; any other error (a server
// without message schedules, say) is returned at once.
func (p *Pruner) Run(ctx context.Context) error {
	if err := p.Config.validate(); err != nil {
		return err
	}
	if !p.Enabled() {
		p.Logger.Info("message pruning off: MESSAGES keeps every record")
		<-ctx.Done()
		return nil
	}
	if err := p.setup(ctx); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return nil
	}
	p.Logger.Info("message pruner started", "grace", p.Config.Grace, "slots", p.Config.Slots)
	workers := bus.Workers{Slots: p.Config.Slots, Logger: p.Logger, Metrics: p.worker}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		errs[0] = bus.KindBuiltPrune.Work(ctx, p.Store.Bus, workers, p.built)
	}()
	go func() {
		defer wg.Done()
		errs[1] = bus.KindPruneDue.Work(ctx, p.Store.Bus, workers, p.due)
	}()
	wg.Wait()
	return errors.Join(errs...)
}

// setupRetryFirst and setupRetryMax bound the wait between rounds of
// SetupPrune attempts while the cluster answers with transient errors;
// setupRound is one round: quick repeats for a few seconds, each attempt
// bounded so that a request lost with a node is repeated (an attempt cut
// short loses nothing: the next finds what it created in place).
var (
	setupRetryFirst = time.Second
	setupRetryMax   = 30 * time.Second
	setupRound      = bus.RetryPolicy{Attempt: 5 * time.Second} // bus.DefaultRetry's delays and budget
)

// setup runs bus.SetupPrune until it succeeds, fails with an error that is
// not transient, or ctx ends (then it returns nil: a stop, not a failure).
// SetupPrune only creates or updates a stream and two consumers to one
// configuration, so it can run any number of times. Each round is
// setupRound; between rounds the wait doubles up to setupRetryMax.
func (p *Pruner) setup(ctx context.Context) error {
	wait := setupRetryFirst
	for round := 1; ; round++ {
		err := setupRound.Do(ctx, func(ctx context.Context) error { return bus.SetupPrune(ctx, p.Store.Bus) })
		switch {
		case err == nil:
			if round > 1 {
				p.Logger.Info("message pruner set up after transient NATS errors", "rounds", round)
			}
			return nil
		case ctx.Err() != nil:
			return nil
		case !bus.IsTransient(err):
			return err
		}
		d := wait/2 + rand.N(wait/2+1)
		p.Logger.Warn("message pruner set-up failed on a transient NATS error; retrying (builds go on meanwhile, prunes wait)",
			"round", round, "in", d, "err", err)
		if bus.Sleep(ctx, d) != nil {
			return nil
		}
		wait = min(2*wait, setupRetryMax)
	}
}

// built schedules the prune of a newly committed state.
func (p *Pruner) built(ctx context.Context, ev bus.BuiltEvent, _ bus.Delivery) error {
	c, err := archive.ParseCommunityID(ev.Community)
	if err != nil {
		return fmt.Errorf("%w: %w", bus.ErrMalformed, err)
	}
	st, err := p.state(ctx, c)
	if err != nil {
		return err
	}
	cut, ok := messages.CutoffOf(st)
	if !ok {
		return nil
	}
	return p.schedule(ctx, c, cut)
}

// due prunes what a fired schedule names (see Pruner).
func (p *Pruner) due(ctx context.Context, ev bus.PruneEvent, _ bus.Delivery) error {
	c, err := archive.ParseCommunityID(ev.Community)
	if err != nil {
		return fmt.Errorf("%w: %w", bus.ErrMalformed, err)
	}
	if ev.Seq == 0 || ev.End == 0 {
		return fmt.Errorf("%w: prune event without a cutoff", bus.ErrMalformed)
	}
	log := p.Logger.With("community", ev.Community)
	now := p.now()
	if at := p.dueAt(ev.BuiltAt); now.Before(at) {
		// The server's clock is ahead of ours.
		return bus.Snooze(at.Sub(now)+100*time.Millisecond, "prune due at "+at.UTC().Format(time.RFC3339))
	}
	st, err := p.state(ctx, c)
	if err != nil {
		return err
	}
	latest, ok := messages.CutoffOf(st)
	if !ok {
		log.Warn("prune event for a community without a committed watermark: nothing pruned", "end", ev.End, "watermark", ev.Seq)
		return nil
	}
	cut := messages.Cutoff{End: ev.End, Seq: ev.Seq, BuiltAt: ev.BuiltAt}.Within(latest)
	if !now.Before(p.dueAt(latest.BuiltAt)) {
		cut = latest
	}
	t0 := time.Now()
	stats, err := p.Store.Prune(ctx, c, cut)
	switch {
	case errors.Is(err, messages.ErrStaleCutoff):
		p.metrics.prunes.WithLabelValues(pruneResultStale).Inc()
		log.Warn("prune refused: the committed watermark does not match the message stream (recreated?); the next build's state will", "err", err)
	case err != nil:
		p.metrics.prunes.WithLabelValues(pruneResultFailed).Inc()
		if ctx.Err() == nil {
			log.Warn("prune failed; retrying (what was removed stays removed)", "end", cut.End, "watermark", cut.Seq, "err", err)
		}
		return err
	default:
		lag := p.record(cut, stats, now)
		logPrune(log, cut, stats, time.Since(t0), lag)
	}
	if latest.Covers(cut) {
		return p.schedule(ctx, c, latest)
	}
	return nil
}

// record counts one prune in the metrics and returns its lag: how long
// after the cutoff became prunable it ran.
func (p *Pruner) record(cut messages.Cutoff, st messages.PruneStats, now time.Time) time.Duration {
	res := pruneResultNothing
	if st.Records > 0 {
		res = pruneResultPruned
	}
	p.metrics.prunes.WithLabelValues(res).Inc()
	p.metrics.records.WithLabelValues("purge").Add(float64(st.Records - st.Deletes))
	p.metrics.records.WithLabelValues("delete").Add(float64(st.Deletes))
	p.metrics.bytes.Add(float64(st.Bytes))
	p.metrics.bodies.Add(float64(st.Bodies))
	if cut.BuiltAt.IsZero() {
		return 0
	}
	lag := max(now.Sub(cut.BuiltAt.Add(p.Config.Grace)), 0)
	p.metrics.lag.Observe(lag.Seconds())
	return lag
}

// state reads community c's committed state; an unreachable NATS is waited
// for, not counted as a failure.
func (p *Pruner) state(ctx context.Context, c archive.CommunityID) (*state.Build, error) {
	st, _, err := (&state.Store{KV: p.Store.Bus.State}).GetBuild(ctx, c.String())
	if err != nil {
		return nil, bus.Unavailable("committed state of "+c.String(), err)
	}
	return st, nil
}

// dueAt is when a state committed at builtAt may be pruned: the grace after
// it, on a whole second (a schedule's time has no fraction, so the server
// fires it no earlier).
func (p *Pruner) dueAt(builtAt time.Time) time.Time {
	at := builtAt.Add(p.Config.Grace)
	if t := at.Truncate(time.Second); t.Before(at) {
		at = t.Add(time.Second)
	}
	return at
}

// schedule sets community c's prune of cut at its due time, unless one is
// pending (see Pruner). A due time already past fires at once.
func (p *Pruner) schedule(ctx context.Context, c archive.CommunityID, cut messages.Cutoff) error {
	at := p.dueAt(cut.BuiltAt)
	data, err := json.Marshal(bus.PruneEvent{Community: c.String(), End: cut.End, Seq: cut.Seq, BuiltAt: cut.BuiltAt})
	if err != nil {
		return err
	}
	// Repeated over transient errors: the publish expects the schedule
	// subject to be empty, so a repeat of one that was stored after all
	// (its ack lost) is refused as "pending already", which it is.
	err = bus.Retry(ctx, func(ctx context.Context) error {
		_, err := p.Store.Bus.JS.Publish(ctx, bus.SubjectPruneSchedule(c.String()), data, jetstream.WithScheduleAt(at),
			jetstream.WithScheduleTarget(bus.SubjectPruneDue(c.String())), jetstream.WithExpectLastSequencePerSubject(0))
		return err
	})
	switch {
	case bus.IsWrongLastSequence(err):
		p.Logger.Debug("a prune is pending already; it schedules the newer state when it fires", "community", c.String(), "end", cut.End)
		return nil
	case err != nil:
		return fmt.Errorf("schedule prune: %w", err)
	}
	p.Logger.Debug("prune scheduled", "community", c.String(), "end", cut.End, "watermark", cut.Seq, "at", at.UTC().Format(time.RFC3339))
	return nil
}

// logPrune logs one prune's outcome.
func logPrune(log *slog.Logger, cut messages.Cutoff, st messages.PruneStats, took, lag time.Duration) {
	lvl := slog.LevelInfo
	if st.Records == 0 {
		lvl = slog.LevelDebug
	}
	log.Log(context.Background(), lvl, "archived messages pruned", "end", cut.End, "watermark", cut.Seq,
		"records", st.Records, "bytes", st.Bytes, "payload_objects", st.Bodies, "purges", st.Purges, "deletes", st.Deletes,
		"kept", st.Kept, "scanned", st.Scanned, "took", took.Round(time.Millisecond), "lag", lag.Round(time.Millisecond))
}
