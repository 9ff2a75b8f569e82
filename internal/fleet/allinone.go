package fleet

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/archivefleet/archivefleet/internal/announcer"
	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/atomicfile"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/console"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/lock"
	"github.com/archivefleet/archivefleet/internal/messages"
	"github.com/archivefleet/archivefleet/internal/observe"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/tracker"
)

// DemoKeyFile, in the data dir, keeps the demo community's private key so
// the same community is used after a restart.
const DemoKeyFile = "demo-community.key"

// RunAllInOne runs the whole fleet in this process. Start from
// DefaultAllInOneConfig. Cancelling ctx is a clean stop, even during
// start-up (a part then fails with context.Canceled): it returns nil.
func RunAllInOne(ctx context.Context, cfg AllInOneConfig) error {
	err := runAllInOne(ctx, cfg)
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func runAllInOne(ctx context.Context, cfg AllInOneConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg.Settle = cfg.settle()
	if cfg.logOut == nil {
		cfg.logOut = os.Stderr
	}
	log := cfg.NewLoggerTo(cfg.logOut, "fleet")
	natsDir := filepath.Join(cfg.DataDir, "nats")
	ns, err := StartEmbedded(EmbeddedOptions{Dir: natsDir, Port: cfg.NATSPort, MaxPayload: int32(cfg.MaxPayload)})
	if errors.Is(err, ErrPortInUse) {
		return fmt.Errorf("%w: is another fleet or nats-server running? Stop it, or set %s_EMBEDDED_NATS_PORT to a free port "+
			"(then give archivectl -nats nats://127.0.0.1:<port>) or to -1 for a random one", err, Prefix)
	}
	if err != nil {
		return err
	}
	defer func() {
		StopNATS(context.Background(), ns)
		log.Info("stopped")
	}()
	cfg.NATSURL = ns.ClientURL()
	log.Info("embedded NATS JetStream started", "url", cfg.NATSURL, "store", natsDir, "max_payload", cfg.MaxPayload.String())
	b, err := cfg.Connect(ctx, "fleet", log)
	if err != nil {
		return err
	}
	defer drain(b.NC)
	log.Warn("single-process mode: a process-local lock replaces Redis; run the separate services with Redis to scale out")
	locker := lock.NewLocal()
	reg := observe.NewRegistry("fleet")

	ac := DefaultArchiverConfig()
	ac.Common, ac.WorkDir, ac.TrackerURL = cfg.Common, filepath.Join(cfg.DataDir, "archiver"), cfg.TrackerURL
	if cfg.Trackers != "" {
		ac.Trackers = cfg.Trackers
	}
	sc := DefaultSeederConfig()
	sc.Common, sc.ID, sc.DataDir, sc.Listen, sc.PublicAddr = cfg.Common, "fleet", filepath.Join(cfg.DataDir, "seeder"), cfg.BTListen, cfg.BTPublic
	sc.DHT, sc.Trackers = false, false // peers reach a local fleet through the magnet's x.pe
	sc.SnapshotGrace = cfg.SnapshotGrace
	nc := DefaultAnnouncerConfig()
	nc.Common, nc.WebhookURL = cfg.Common, cfg.WebhookURL
	hc := DefaultSchedulerConfig()
	hc.Common, hc.Tick, hc.Republish = cfg.Common, cfg.Tick, cfg.Republish

	logs := map[string]*slog.Logger{}
	for _, n := range []string{"archiver", "seeder", "announcer", "scheduler", "waku", "demo"} {
		logs[n] = cfg.NewLoggerTo(cfg.logOut, n)
	}
	var ts *tracker.Server
	if cfg.TrackerListen != "" {
		if ts, err = tracker.Listen(b, cfg.TrackerListen, logs["seeder"], reg); err != nil {
			return err
		}
		if ac.TrackerURL == "" {
			ac.TrackerURL = ts.AnnounceURL
		}
	}
	arch, st := newArchiver(b, locker, ac, logs["archiver"], reg)
	if err := bus.EnsureMessagesLayout(ctx, b); err != nil {
		return fmt.Errorf("messages layout: %w", err)
	}
	pruner := newPruner(st, cfg.PruneGrace, logs["archiver"], reg)
	seeder := newSeeder(b, sc, logs["seeder"], reg)
	ann := newAnnouncer(b, nc, logs["announcer"], reg)
	sched := newScheduler(b, hc, logs["scheduler"], reg)
	wakuKey := cfg.Waku.KeyFile
	if wakuKey == "" {
		wakuKey = filepath.Join(cfg.DataDir, DefaultFleetWakuKeyFile)
	}
	edge, wakuPeer, err := newWakuEdge(ctx, b, cfg.Waku, wakuKey, st, logs["waku"], reg)
	if err != nil {
		return err
	}
	defer wakuPeer.Close()
	var wakuAddrs []string
	for _, a := range wakuPeer.Addrs() {
		wakuAddrs = append(wakuAddrs, a.String())
	}
	logs["waku"].Info("waku edge listening: a local Waku node can connect to these", "addrs", wakuAddrs, "key_file", wakuKey,
		"pubsub_topics", wakuPeer.PubsubTopics(), "min_peers", cfg.Waku.MinPeers)
	stopIngest, err := st.ServeNATS(ctx, cfg.IngestToken)
	if err != nil {
		return err
	}
	defer stopIngest()
	srv := &observe.Server{Addr: cfg.HTTPAddr, Registry: reg, Logger: log,
		Checks:   map[string]observe.Check{"nats": b.Ready, "torrent": seeder.Ready, "waku": wakuReady(wakuPeer, cfg.Waku.MinPeers)},
		Handlers: map[string]http.Handler{messages.IngestPath: st.Handler(cfg.IngestToken)}}
	httpAddr, err := srv.Listen()
	if err != nil {
		return err
	}
	srv.Handlers[console.Path] = newConsole(b, &cfg, httpAddr.String(), cfg.IngestToken, wakuPeer, log, reg)
	log.Info("fleet started", "settle", cfg.Settle, "tick", cfg.Tick, "demo", cfg.Demo)

	g, gctx := errgroup.WithContext(ctx)
	defer onStop(gctx, ctx, log)()
	part := func(name string, fn func(context.Context) error) {
		l := logs[name]
		g.Go(func() error {
			pctx, cancel := context.WithCancel(gctx)
			wait := onStop(pctx, ctx, l)
			err := fn(pctx)
			cancel()
			wait()
			if ctx.Err() != nil && errors.Is(err, context.Canceled) {
				err = nil
			}
			logStopped(l, err)
			if err == nil && ctx.Err() == nil {
				err = fmt.Errorf("%s stopped unexpectedly", name)
			}
			return err
		})
	}
	g.Go(func() error { return srv.Serve(gctx) })
	part("archiver", arch.Run)
	part("archiver", pruner.Run)
	part("seeder", seeder.Run)
	if ts != nil {
		part("seeder", ts.Run)
	}
	part("announcer", ann.Run)
	part("scheduler", sched.Run)
	part("waku", edge.Run)
	if cfg.Demo {
		part("demo", func(ctx context.Context) error {
			return runDemo(ctx, b, st, cfg.DataDir, seeder.LocalPort, cfg.DemoEvery, logs["demo"])
		})
	}
	err = g.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		return nil
	}
	return err
}

// drain drains a connection and waits (briefly) until it is closed, so
// pending acks reach the server before it stops.
func drain(nc *nats.Conn) {
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	for end := time.Now().Add(5 * time.Second); !nc.IsClosed() && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	nc.Close()
}

// demoTopics are the demo community's channel topics.
var demoTopics = []archive.Topic{{0xde, 0x30, 0, 1}, {0xde, 0x30, 0, 2}}

// demoKey returns the demo community's key from the data dir, making and
// saving one on the first start.
func demoKey(dataDir string) (key []byte, created bool, err error) {
	path := filepath.Join(dataDir, DemoKeyFile)
	raw, err := os.ReadFile(path)
	if err == nil {
		key, err = hex.DecodeString(strings.TrimPrefix(strings.TrimSpace(string(raw)), "0x"))
		if err != nil || len(key) != 32 {
			return nil, false, fmt.Errorf("%s: not a 32-byte hex private key; remove it to make a new demo community", path)
		}
		return key, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	key = fixture.Key()
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, false, err
	}
	if err := atomicfile.WriteFile(path, []byte("0x"+hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, false, err
	}
	return key, true, nil
}

// registerDemo registers the demo community, or reuses the one registered
// by an earlier start (keeping its start and whatever an operator changed
// except the interval, which follows DEMO_INTERVAL), and stores its signing
// key in the keys bucket (again at every start: a key an earlier version
// kept in the registry moves there). It returns the community, its key and
// where its unarchived time starts.
func registerDemo(ctx context.Context, b *bus.Bus, dataDir string, every time.Duration, log *slog.Logger) (*registry.Community, []byte, uint64, error) {
	key, created, err := demoKey(dataDir)
	if err != nil {
		return nil, nil, 0, err
	}
	if _, err := registry.NewKeys(b.CommunityKeys).Put(ctx, key); err != nil {
		return nil, nil, 0, err
	}
	reg := registry.New(b.Communities)
	now := uint64(time.Now().Unix())
	id := fixture.ID(key)
	com, err := reg.Get(ctx, id)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		com = fixture.CommunityFromKey(key, every, now-3*uint64(every/time.Second), demoTopics...)
		if err := reg.Put(ctx, com); err != nil {
			return nil, nil, 0, err
		}
		log.Info("demo community registered", "community", id.String(), "interval", every, "key_file", filepath.Join(dataDir, DemoKeyFile),
			"new_key", created)
		return com, key, com.Since, nil
	case err != nil:
		return nil, nil, 0, err
	}
	if time.Duration(com.Interval) != every || !slices.Contains(com.Topics, demoTopics[0]) || len(com.LegacySigningKey) > 0 {
		com.Interval = registry.Duration(every)
		com.LegacySigningKey = nil // stored in the keys bucket above
		for _, t := range demoTopics {
			if !slices.Contains(com.Topics, t) {
				com.Topics = append(com.Topics, t)
			}
		}
		if err := reg.Put(ctx, com); err != nil {
			return nil, nil, 0, err
		}
	}
	bs, _, err := (&state.Store{KV: b.State}).GetBuild(ctx, id.String())
	if err != nil {
		return nil, nil, 0, err
	}
	log.Info("demo community reused", "community", id.String(), "interval", every, "archived_to", bs.LastEnd, "disabled", com.Disabled)
	return com, key, com.NextStart(bs.LastEnd), nil
}

// runDemo registers the demo community (or reuses the one kept in the data
// dir), ingests messages as time passes and logs every announcement after
// checking its signature.
func runDemo(ctx context.Context, b *bus.Bus, st *messages.Store, dataDir string, port func() int, every time.Duration, log *slog.Logger) error {
	com, key, from, err := registerDemo(ctx, b, dataDir, every, log)
	if err != nil {
		return err
	}
	id := com.ID
	log.Info("demo peer", "peer", net.JoinHostPort("127.0.0.1", strconv.Itoa(port())))
	sub, err := b.NC.Subscribe(bus.SubjectAnnounced(id.String()), func(m *nats.Msg) {
		v, err := announcer.Verify(m.Data)
		if err != nil || v.Community != id {
			log.Error("announcement failed verification", "err", err)
			return
		}
		log.Info("ANNOUNCED magnet link (signature verified)", "clock", v.Clock, "magnet", v.Magnet)
	})
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	signers := [][]byte{fixture.Signer(key)}
	ingest := func(from, to uint64, n int) {
		msgs := fixture.Messages{N: n, From: from, To: to, Random: true, Topics: demoTopics, Signers: signers, Size: 256}.Make()
		res, err := st.Ingest(ctx, id, msgs)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("demo ingest failed", "err", err)
			}
			return
		}
		out, _ := json.Marshal(res)
		log.Info("demo messages ingested", "result", string(out))
	}
	now := uint64(time.Now().Unix())
	if from < now {
		ingest(from, now, 300)
	}
	t := time.NewTicker(every / 2)
	defer t.Stop()
	last := now
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			n := uint64(time.Now().Unix())
			ingest(last, n, 50)
			last = n
		}
	}
}
