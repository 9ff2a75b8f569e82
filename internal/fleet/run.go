package fleet

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/archivefleet/archivefleet/internal/announcer"
	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/archiver"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/lock"
	"github.com/archivefleet/archivefleet/internal/messages"
	"github.com/archivefleet/archivefleet/internal/observe"
	"github.com/archivefleet/archivefleet/internal/pruner"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/scheduler"
	"github.com/archivefleet/archivefleet/internal/seeder"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/tracker"
)

// AnnounceList parses the TRACKERS setting.
func AnnounceList(s string, fleet ...string) [][]string {
	var out [][]string
	if len(fleet) > 0 {
		// The fleet's own tracker first, all its URLs one tier.
		out = append(out, slices.Clone(fleet))
	}
	switch strings.TrimSpace(s) {
	case "", "default":
		if out == nil {
			return nil // the archive's default: status-go's list
		}
		return append(out, archive.DefaultAnnounceList...)
	case "none":
		if out == nil {
			return [][]string{}
		}
		return out
	}
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, []string{t})
		}
	}
	return out
}

// serve runs fn and the HTTP server together; when ctx ends (or either
// fails) it logs that the service is stopping, drains readiness first, then
// waits for both.
func serve(ctx context.Context, log *slog.Logger, srv *observe.Server, fn func(context.Context) error) error {
	g, gctx := errgroup.WithContext(ctx)
	defer onStop(gctx, ctx, log)()
	g.Go(func() error { return srv.Serve(gctx) })
	g.Go(func() error {
		err := fn(gctx)
		if err == nil && ctx.Err() == nil {
			err = errors.New("service stopped unexpectedly")
		}
		return err
	})
	err := g.Wait()
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// onStop logs that a service is stopping as soon as gctx ends (the service
// was asked to stop, or a part of it failed); the returned function waits
// until that was logged, so "stopping" always comes before "stopped". gctx
// must end by the time it is called (an errgroup's context does once Wait
// returns).
func onStop(gctx, ctx context.Context, log *slog.Logger) (wait func()) {
	done := make(chan struct{})
	go func() {
		<-gctx.Done()
		logStopping(ctx, log)
		close(done)
	}()
	return func() { <-done }
}

// logStopping says a service is stopping, and why when it was not asked to.
func logStopping(ctx context.Context, log *slog.Logger) {
	if ctx.Err() != nil {
		log.Info("stopping")
	} else {
		log.Warn("stopping after a failure")
	}
}

// logStopped says a service stopped, with its error if any.
func logStopped(log *slog.Logger, err error) {
	if err != nil {
		log.Error("stopped", "err", err)
	} else {
		log.Info("stopped")
	}
}

// service is what a runner needs from one service.
type service struct {
	run      func(context.Context) error
	checks   map[string]observe.Check
	handlers map[string]http.Handler
}

// runService connects to NATS, builds the service and runs it with its
// operational HTTP endpoints until ctx ends.
func runService(ctx context.Context, c Common, name string,
	build func(b *bus.Bus, log *slog.Logger, reg prometheus.Registerer) (*service, error)) error {
	log := c.NewLogger(name)
	b, err := c.Connect(ctx, name, log)
	if err != nil {
		return err
	}
	defer b.NC.Drain()
	reg := observe.NewRegistry(name)
	svc, err := build(b, log, reg)
	if err != nil {
		return err
	}
	checks := map[string]observe.Check{"nats": b.Ready}
	for k, v := range svc.checks {
		checks[k] = v
	}
	srv := &observe.Server{Addr: c.HTTPAddr, Registry: reg, Logger: log, Checks: checks, Handlers: svc.handlers}
	err = serve(ctx, log, srv, svc.run)
	logStopped(log, err)
	return err
}

// RunArchiver runs the archiver service and the ingest endpoints.
func RunArchiver(ctx context.Context, cfg ArchiverConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	rc, err := cfg.Redis.Client()
	if err != nil {
		return err
	}
	defer rc.Close()
	locker := &lock.Redis{Client: rc, Prefix: "archivefleet:"}
	return runService(ctx, cfg.Common, "archiver", func(b *bus.Bus, log *slog.Logger, reg prometheus.Registerer) (*service, error) {
		svc, st := newArchiver(b, locker, cfg, log, reg)
		if err := bus.EnsureMessagesLayout(ctx, b); err != nil {
			// Reads then also look for records of earlier layouts: slower,
			// still complete.
			log.Warn("where this layout's records begin is not recorded; reads look for earlier layouts too", "err", err)
		}
		stopIngest, err := st.ServeNATS(ctx, cfg.IngestToken)
		if err != nil {
			return nil, err
		}
		pruner := newPruner(st, cfg.PruneGrace, log, reg)
		run := func(ctx context.Context) error {
			defer stopIngest()
			g, gctx := errgroup.WithContext(ctx)
			g.Go(func() error { return svc.Run(gctx) })
			g.Go(func() error { return pruner.Run(gctx) })
			return g.Wait()
		}
		return &service{run: run, checks: map[string]observe.Check{"redis": locker.Ping},
			handlers: map[string]http.Handler{messages.IngestPath: st.Handler(cfg.IngestToken)}}, nil
	})
}

// newPruner bounds MESSAGES: MESSAGE_PRUNE_GRACE 0 keeps every message
// (pruner.Off), as status-go's control node keeps its table.
func newPruner(st *messages.Store, grace time.Duration, log *slog.Logger, reg prometheus.Registerer) *pruner.Pruner {
	return pruner.New(st, pruner.Config{Grace: zeroDisables(grace)}, log, reg)
}

// zeroDisables maps a setting the environment disables with 0
// (REPUBLISH, SNAPSHOT_GRACE, MESSAGE_PRUNE_GRACE) to the services'
// configs, where 0 is the default and a negative value disables.
func zeroDisables(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}

func newArchiver(b *bus.Bus, locker archiver.Locker, cfg ArchiverConfig, log *slog.Logger, reg prometheus.Registerer) (*archiver.Service, *messages.Store) {
	registryStore := registry.New(b.Communities)
	// Reads of large windows sort through run files here.
	sortDir := filepath.Join(cfg.WorkDir, "sort")
	if err := os.MkdirAll(sortDir, 0o700); err != nil {
		log.Warn("sort folder not made: large windows sort in the system's temporary folder", "dir", sortDir, "err", err)
		sortDir = ""
	}
	st := &messages.Store{Bus: b, Logger: log, Communities: registryStore, Metrics: messages.NewMetrics(reg), SortDir: sortDir}
	svc := archiver.New(archiver.Service{
		Bus: b, Registry: registryStore, State: &state.Store{KV: b.State}, Sources: st, Locker: locker, Logger: log,
		Config: archiver.Config{WorkDir: cfg.WorkDir, Slots: cfg.Slots, LockTTL: cfg.LockTTL, Settle: cfg.Settle,
			AnnounceList: AnnounceList(cfg.Trackers, splitList(cfg.TrackerURL)...), CreatedBy: cfg.CreatedBy, BufferedIO: cfg.BufferedIO},
	}, reg)
	return svc, st
}

// RunSeeder runs the seeder service.
func RunSeeder(ctx context.Context, cfg SeederConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	return runService(ctx, cfg.Common, "seeder", func(b *bus.Bus, log *slog.Logger, reg prometheus.Registerer) (*service, error) {
		svc := newSeeder(b, cfg, log, reg)
		run := svc.Run
		if cfg.TrackerListen != "" {
			ts, err := tracker.Listen(b, cfg.TrackerListen, log, reg)
			if err != nil {
				return nil, err
			}
			run = func(ctx context.Context) error {
				g, gctx := errgroup.WithContext(ctx)
				g.Go(func() error { return ts.Run(gctx) })
				g.Go(func() error { return svc.Run(gctx) })
				return g.Wait()
			}
		}
		return &service{run: run, checks: map[string]observe.Check{"torrent": svc.Ready}}, nil
	})
}

func newSeeder(b *bus.Bus, cfg SeederConfig, log *slog.Logger, reg prometheus.Registerer) *seeder.Service {
	var swarm seeder.Swarm
	if b.TrackerPeers != nil { // a bare Bus in the metrics test has none
		swarm = tracker.NewRegistry(b)
	}
	return seeder.New(seeder.Service{Bus: b, Registry: registry.New(b.Communities), State: &state.Store{KV: b.State}, Logger: log,
		Swarm: swarm,
		Config: seeder.Config{ID: cfg.ID, DataDir: cfg.DataDir, ListenAddr: cfg.Listen, PublicAddr: cfg.PublicAddr,
			DHT: cfg.DHT, Trackers: cfg.Trackers, SnapshotGrace: zeroDisables(cfg.SnapshotGrace), Replicas: cfg.Replicas}}, reg)
}

// RunAnnouncer runs the announcer service.
func RunAnnouncer(ctx context.Context, cfg AnnouncerConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	return runService(ctx, cfg.Common, "announcer", func(b *bus.Bus, log *slog.Logger, reg prometheus.Registerer) (*service, error) {
		return &service{run: newAnnouncer(b, cfg, log, reg).Run}, nil
	})
}

func newAnnouncer(b *bus.Bus, cfg AnnouncerConfig, log *slog.Logger, reg prometheus.Registerer) *announcer.Service {
	ts := []announcer.Transport{announcer.NATSTransport{Bus: b}}
	if cfg.WebhookURL != "" {
		ts = append(ts, announcer.Webhook{URL: cfg.WebhookURL})
	}
	return announcer.New(announcer.Service{Bus: b, Registry: registry.New(b.Communities), Keys: registry.NewKeys(b.CommunityKeys), State: &state.Store{KV: b.State},
		Transports: ts, Slots: cfg.Slots, Logger: log}, reg)
}

// RunScheduler runs the scheduler service.
func RunScheduler(ctx context.Context, cfg SchedulerConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	return runService(ctx, cfg.Common, "scheduler", func(b *bus.Bus, log *slog.Logger, reg prometheus.Registerer) (*service, error) {
		return &service{run: newScheduler(b, cfg, log, reg).Run}, nil
	})
}

func newScheduler(b *bus.Bus, cfg SchedulerConfig, log *slog.Logger, reg prometheus.Registerer) *scheduler.Service {
	return scheduler.New(scheduler.Service{Bus: b, Logger: log,
		Config: scheduler.Config{Tick: cfg.Tick, Republish: zeroDisables(cfg.Republish), RetryAfter: cfg.RetryAfter, Settle: cfg.Settle}}, reg)
}
