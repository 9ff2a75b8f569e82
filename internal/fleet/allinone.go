package fleet

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/sha3"
	"golang.org/x/sync/errgroup"

	"github.com/archivefleet/archivefleet/internal/announce"
	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/lock"
	"github.com/archivefleet/archivefleet/internal/observe"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/store"
)

// AllInOneConfig configures cmd/fleet: every service in one process around an
// embedded NATS server, with no external service needed.
type AllInOneConfig struct {
	Common
	DataDir     string        `envconfig:"DATA_DIR" default:".fleet"`
	NATSPort    int           `envconfig:"EMBEDDED_NATS_PORT" default:"-1"`
	BTListen    string        `envconfig:"BT_LISTEN" default:"127.0.0.1:0"`
	BTPublic    string        `envconfig:"BT_PUBLIC_ADDR"`
	Tick        time.Duration `envconfig:"TICK" default:"1s"`
	Republish   time.Duration `envconfig:"REPUBLISH" default:"24h"`
	WebhookURL  string        `envconfig:"WEBHOOK_URL"`
	IngestToken string        `envconfig:"INGEST_TOKEN"`
	Demo        bool          `envconfig:"DEMO" default:"true"`
	DemoEvery   time.Duration `envconfig:"DEMO_INTERVAL" default:"20s"`
}

// RunAllInOne runs the whole fleet in this process.
func RunAllInOne(ctx context.Context, cfg AllInOneConfig) error {
	log := cfg.NewLogger("fleet")
	ns, err := EmbeddedNATS(filepath.Join(cfg.DataDir, "nats"), "127.0.0.1", cfg.NATSPort)
	if err != nil {
		return err
	}
	defer StopNATS(ctx, ns)
	cfg.NATSURL = ns.ClientURL()
	log.Info("embedded NATS JetStream started", "url", cfg.NATSURL, "store", filepath.Join(cfg.DataDir, "nats"))
	b, err := cfg.Connect(ctx, "fleet", log)
	if err != nil {
		return err
	}
	defer b.NC.Drain()
	log.Warn("single-process mode: a process-local lock replaces Redis; run the separate services with Redis to scale out")
	locker := lock.NewLocal()
	reg := observe.NewRegistry("fleet")
	cfg.HTTPAddr = cfg.httpAddr("127.0.0.1:9100")
	arch, st := newArchiver(b, locker, ArchiverConfig{Common: cfg.Common, WorkDir: filepath.Join(cfg.DataDir, "archiver"),
		Slots: 2, LockTTL: 30 * time.Second, Trackers: "default"}, cfg.NewLogger("archiver"), reg)
	seeder := newSeeder(b, SeederConfig{Common: cfg.Common, ID: "fleet", DataDir: filepath.Join(cfg.DataDir, "seeder"),
		Listen: cfg.BTListen, PublicAddr: cfg.BTPublic}, cfg.NewLogger("seeder"), reg)
	ann := newAnnouncer(b, AnnouncerConfig{Common: cfg.Common, WebhookURL: cfg.WebhookURL, Slots: 2}, cfg.NewLogger("announcer"), reg)
	sched := newScheduler(b, SchedulerConfig{Common: cfg.Common, Tick: cfg.Tick, Republish: cfg.Republish, RetryAfter: time.Minute},
		cfg.NewLogger("scheduler"), reg)
	sub, err := st.ServeNATS(ctx)
	if err != nil {
		return err
	}
	defer sub.Drain()
	srv := &observe.Server{Addr: cfg.HTTPAddr, Registry: reg, Logger: log,
		Checks:   map[string]observe.Check{"nats": b.Ready, "torrent": seeder.Ready},
		Handlers: map[string]http.Handler{store.IngestPath: st.Handler(cfg.IngestToken)}}
	if _, err := srv.Listen(); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(gctx) })
	g.Go(func() error { return arch.Run(gctx) })
	g.Go(func() error { return seeder.Run(gctx) })
	g.Go(func() error { return ann.Run(gctx) })
	g.Go(func() error { return sched.Run(gctx) })
	if cfg.Demo {
		g.Go(func() error { return runDemo(gctx, b, st, seeder.LocalPort, cfg.DemoEvery, cfg.NewLogger("demo")) })
	}
	err = g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// runDemo registers a generated community with a short interval, ingests
// messages as time passes and prints every announcement after checking its
// signature.
func runDemo(ctx context.Context, b *bus.Bus, st *store.Store, port func() int, every time.Duration, log *slog.Logger) error {
	key, err := secp256k1.GeneratePrivateKey()
	if err != nil {
		return err
	}
	var id archive.CommunityID
	copy(id[:], key.PubKey().SerializeCompressed())
	topics := []archive.Topic{{0xde, 0x30, 0, 1}, {0xde, 0x30, 0, 2}}
	now := time.Now().Unix()
	since := uint64(now - 3*int64(every/time.Second))
	com := &registry.Community{ID: id, Topics: topics, Interval: registry.Duration(every), Since: since, SigningKey: key.Serialize()}
	if err := registry.New(b.Communities).Put(ctx, com); err != nil {
		return err
	}
	log.Info("demo community registered", "community", id.String(), "interval", every,
		"peer", net.JoinHostPort("127.0.0.1", strconv.Itoa(port())))
	sub, err := b.NC.Subscribe(bus.SubjectAnnounced(id.String()), func(m *nats.Msg) {
		v, err := announce.Verify(m.Data)
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
	signer := key.PubKey().SerializeUncompressed()
	ingest := func(from, to int64, n int) {
		msgs := make([]archive.Message, n)
		for i := range msgs {
			var r [8]byte
			rand.Read(r[:])
			payload := make([]byte, 256)
			rand.Read(payload)
			h := sha3.NewLegacyKeccak256()
			h.Write(payload)
			msgs[i] = archive.Message{Sig: signer, Timestamp: uint64(from + int64(binary.BigEndian.Uint64(r[:])%uint64(max(1, to-from)))),
				Topic: topics[i%len(topics)], Payload: payload, Hash: h.Sum(nil)}
		}
		res, err := st.Ingest(ctx, id, msgs)
		if err != nil {
			log.Warn("demo ingest failed", "err", err)
			return
		}
		out, _ := json.Marshal(res)
		log.Info("demo messages ingested", "result", string(out))
	}
	ingest(int64(since), now, 300)
	t := time.NewTicker(every / 2)
	defer t.Stop()
	last := now
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			n := time.Now().Unix()
			ingest(last, n, 50)
			last = n
		}
	}
}
