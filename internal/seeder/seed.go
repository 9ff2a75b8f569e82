// Package seeder is the seeder service: it follows every community's committed
// state, keeps the newest torrent of each seeded with anacrolix/torrent,
// drops the superseded one, and re-seeds everything after a restart without
// rehashing what it verified before.
//
// Replicas share the work: each community is seeded by Config.Replicas of
// the live seeders, chosen by rendezvous hashing (internal/placement), so
// one seeder down leaves a copy while the placement moves, and adding
// seeders adds capacity rather than copies. A seeder that loses a community
// serves it until its new owners do (placement.go).
package seeder

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	g "github.com/anacrolix/generics"
	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/placement"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
)

// Config tunes the seeder.
type Config struct {
	ID         string // unique per replica
	DataDir    string // seeded files: <DataDir>/<community>/{data,index}
	ListenAddr string // BitTorrent TCP/uTP address, e.g. ":9025"; port 0 picks one
	PublicAddr string // host:port members reach; added to magnets as x.pe
	DHT        bool   // announce to the mainline DHT
	Trackers   bool   // announce to the torrents' trackers
	// SwarmEvery is how often the seeder refreshes its fleet-tracker
	// entries (Service.Swarm). 0 means DefaultSwarmEvery.
	SwarmEvery time.Duration
	// RecycleAfter replaces the torrent client after this many dropped
	// torrents, a safety valve for anacrolix/torrent v1.61, which can keep
	// dropped torrents until the client closes (fixed in v1.62). Seeding
	// pauses for the moment the client takes to reopen; torrents come back
	// from their verified files without hashing. 0 means
	// DefaultRecycleAfter; negative never.
	RecycleAfter int
	// SnapshotGrace is how long a superseded torrent is still served (its
	// old index and the prefix of the current data file; see snapshot.go).
	// 0 means DefaultSnapshotGrace (48h, twice the default republish
	// cadence); negative serves no superseded torrent.
	SnapshotGrace time.Duration
	// SnapshotMax bounds the superseded torrents served per community, the
	// oldest going first. 0 means DefaultSnapshotMax (4); negative none.
	SnapshotMax int
	// Replicas is how many seeders seed each community (placement.All:
	// every seeder seeds every community). The zero value is All; New
	// does not change it: callers pass DefaultReplicas or a setting.
	Replicas placement.Factor
	// HeartbeatEvery is how often the seeder renews its membership. 0
	// means DefaultHeartbeatEvery.
	HeartbeatEvery time.Duration
}

// DefaultRecycleAfter is how many dropped torrents the client is replaced
// after.
const DefaultRecycleAfter = 500

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	c.RecycleAfter = cmp.Or(c.RecycleAfter, DefaultRecycleAfter)
	c.SnapshotGrace = cmp.Or(c.SnapshotGrace, DefaultSnapshotGrace)
	c.SnapshotMax = cmp.Or(c.SnapshotMax, DefaultSnapshotMax)
	c.HeartbeatEvery = cmp.Or(c.HeartbeatEvery, DefaultHeartbeatEvery)
	c.SwarmEvery = cmp.Or(c.SwarmEvery, DefaultSwarmEvery)
	return c
}

// validate reports a setting no default can fix.
func (c Config) validate() error {
	switch {
	case c.HeartbeatEvery < 0:
		return fmt.Errorf("seeder: heartbeat period %v is negative", c.HeartbeatEvery)
	case c.SwarmEvery < 0:
		return fmt.Errorf("seeder: swarm refresh period %v is negative", c.SwarmEvery)
	}
	return nil
}

// Service is the seeder.
type Service struct {
	Bus      *bus.Bus
	Registry *registry.Registry
	State    *state.Store
	Config   Config
	Logger   *slog.Logger
	// Swarm, when set, lists this seeder on the fleet's tracker for every
	// torrent it seeds.
	Swarm Swarm

	*live
	metrics *metrics
	// Placement: this seeder as a member, the live members, and who serves
	// what (set by Run).
	self    placement.Member
	view    *placement.View
	serving placement.Serving
}

// live is the running client and what it seeds.
type live struct {
	client  *torrent.Client
	storage storage.ClientImplCloser
	mu      sync.Mutex
	seeding map[string]*torrent.Torrent // community -> current torrent
	meta    map[string]*metainfo.MetaInfo
	snaps   map[string][]*snapshot // community -> superseded torrents served, oldest first
	// snapUploaded is what snapshots no longer in the client uploaded.
	snapUploaded int64
	dropped      int // since the client started
	port         int
	ready        chan struct{}
}

type metrics struct {
	torrents prometheus.GaugeFunc
	replaced prometheus.Counter
	uploaded prometheus.CounterFunc
	peers    prometheus.GaugeFunc
	fetched  prometheus.Counter
	failures prometheus.Counter

	snapshots    prometheus.GaugeFunc
	snapUploaded prometheus.CounterFunc
	expired      prometheus.Counter

	owned     prometheus.GaugeFunc
	diskBytes prometheus.GaugeFunc
	handoffs  *prometheus.CounterVec
}

// New builds the seeder and registers its metrics on reg.
func New(s Service, reg prometheus.Registerer) *Service {
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
	s.live = &live{seeding: map[string]*torrent.Torrent{}, meta: map[string]*metainfo.MetaInfo{}, snaps: map[string][]*snapshot{},
		ready: make(chan struct{})}
	s.Config = s.Config.withDefaults()
	f := promauto.With(reg)
	sv := &s
	sv.metrics = &metrics{
		torrents: f.NewGaugeFunc(prometheus.GaugeOpts{Name: "archivefleet_torrents_seeding", Help: "Torrents being seeded."},
			func() float64 { sv.mu.Lock(); defer sv.mu.Unlock(); return float64(len(sv.seeding)) }),
		replaced: f.NewCounter(prometheus.CounterOpts{Name: "archivefleet_torrents_replaced_total", Help: "Torrents dropped for a newer one."}),
		uploaded: f.NewCounterFunc(prometheus.CounterOpts{Name: "archivefleet_seed_upload_bytes_total", Help: "Payload bytes uploaded to peers."},
			func() float64 {
				return float64(sv.stat(func(st torrent.TorrentStats) int64 { return st.BytesWrittenData.Int64() }))
			}),
		peers: f.NewGaugeFunc(prometheus.GaugeOpts{Name: "archivefleet_seed_peers", Help: "Connected peers over all torrents."},
			func() float64 {
				return float64(sv.stat(func(st torrent.TorrentStats) int64 { return int64(st.ActivePeers) }))
			}),
		fetched:  f.NewCounter(prometheus.CounterOpts{Name: "archivefleet_seed_fetched_bytes_total", Help: "Archive data bytes fetched from the object store (the zero padding compact objects leave out counted as fetched)."}),
		failures: f.NewCounter(prometheus.CounterOpts{Name: "archivefleet_seed_failures_total", Help: "Failed attempts to seed a community's torrent."}),
		snapshots: f.NewGaugeFunc(prometheus.GaugeOpts{Name: "archivefleet_seed_snapshots", Help: "Superseded torrents still served (within their grace)."},
			func() float64 {
				sv.mu.Lock()
				defer sv.mu.Unlock()
				n := 0
				for _, l := range sv.snaps {
					n += len(l)
				}
				return float64(n)
			}),
		snapUploaded: f.NewCounterFunc(prometheus.CounterOpts{Name: "archivefleet_seed_snapshot_upload_bytes_total", Help: "Payload bytes of superseded torrents uploaded to peers."},
			func() float64 { sv.mu.Lock(); defer sv.mu.Unlock(); return float64(sv.snapUploadedLocked()) }),
		expired: f.NewCounter(prometheus.CounterOpts{Name: "archivefleet_seed_snapshots_expired_total", Help: "Superseded torrents no longer served (grace over, too many, or community gone)."}),
		owned: f.NewGaugeFunc(prometheus.GaugeOpts{Name: "archivefleet_seed_communities_owned", Help: "Communities placed on this seeder (it may still serve others it is handing off)."},
			func() float64 {
				if sv.view == nil {
					return 0
				}
				sv.mu.Lock()
				cs := make([]string, 0, len(sv.seeding))
				for c := range sv.seeding {
					cs = append(cs, c)
				}
				sv.mu.Unlock()
				n := 0
				for _, c := range cs {
					if mine, _ := sv.owns(c); mine {
						n++
					}
				}
				return float64(n)
			}),
		diskBytes: f.NewGaugeFunc(prometheus.GaugeOpts{Name: "archivefleet_seed_disk_bytes", Help: "Bytes of the torrents seeded (index and data files; superseded torrents share the data)."},
			func() float64 {
				sv.mu.Lock()
				defer sv.mu.Unlock()
				var n int64
				for _, mi := range sv.meta {
					if info, err := mi.UnmarshalInfo(); err == nil {
						n += info.TotalLength()
					}
				}
				return float64(n)
			}),
		handoffs: f.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_seed_handoffs_total", Help: "Communities handed to this seeder (in) or handed off by it once their new owners served them (out)."},
			[]string{"direction"}),
	}
	return sv
}

// snapUploadedLocked is every payload byte snapshots uploaded. Call with
// s.mu held.
func (s *Service) snapUploadedLocked() int64 {
	n := s.snapUploaded
	for _, l := range s.snaps {
		for _, sn := range l {
			if sn.t != nil {
				st := sn.t.Stats()
				n += st.BytesWrittenData.Int64()
			}
		}
	}
	return n
}

func (s *Service) stat(f func(torrent.TorrentStats) int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, t := range s.seeding {
		n += f(t.Stats())
	}
	return n
}

// Ready reports whether the torrent client is listening.
func (s *Service) Ready(context.Context) error {
	select {
	case <-s.ready:
		return nil
	default:
		return errors.New("torrent client not started")
	}
}

// LocalPort is the port the client listens on (after Run has started).
func (s *Service) LocalPort() int {
	<-s.ready
	return s.client.LocalPort()
}

// Run seeds until ctx is cancelled, then closes the client.
func (s *Service) Run(ctx context.Context) error {
	if err := s.Config.validate(); err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(s.Config.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", s.Config.ListenAddr, err)
	}
	if s.port, err = strconv.Atoi(port); err != nil {
		return fmt.Errorf("listen port %q: %w", port, err)
	}
	if err := s.start(host); err != nil {
		return err
	}
	defer func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.client.Close()
		s.storage.Close()
	}()
	// Later clients (after a recycle) take the same port.
	s.port = s.client.LocalPort()
	if s.Config.PublicAddr == "" {
		// Bound to one specific address: that is where peers reach us.
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
			s.Config.PublicAddr = net.JoinHostPort(host, strconv.Itoa(s.port))
		}
	}
	close(s.ready)
	stopHeartbeat, err := s.joinPlacement(ctx)
	if err != nil {
		return err
	}
	defer stopHeartbeat()
	s.loadSnapshots(ctx)
	if s.snapshotsOn() {
		go s.keepSnapshotsFresh(ctx)
	}
	if s.Swarm != nil {
		go s.keepInSwarm(ctx)
	}
	s.Logger.Info("seeder started", "id", s.Config.ID, "listen", s.client.ListenAddrs(), "public", s.Config.PublicAddr, "data_dir", s.Config.DataDir)
	return s.follow(ctx)
}

// start opens a torrent client and its storage on s.port.
func (s *Service) start(host string) error {
	cl, st, err := NewClient(s.Config, host, s.port, s.Logger)
	if err != nil {
		return err
	}
	s.client, s.storage, s.dropped = cl, st, 0
	return nil
}

// NewClient opens the torrent client a seeder runs: seeding on, files in
// cfg.DataDir with part files (a file at its final name with its full length
// counts as complete without hashing; the seeder only ever puts verified
// bytes at final names, which makes restarts and recycles free), DHT and
// trackers as configured, no port forwarding. The caller closes both.
func NewClient(c Config, host string, port int, log *slog.Logger) (*torrent.Client, storage.ClientImplCloser, error) {
	cfg := torrent.NewDefaultClientConfig()
	cfg.ListenHost = func(string) string { return host }
	cfg.ListenPort = port
	cfg.Seed = true
	cfg.NoDHT = !c.DHT
	cfg.DisableTrackers = !c.Trackers
	cfg.NoDefaultPortForwarding = true
	if ip := net.ParseIP(host); ip != nil && ip.To4() != nil {
		cfg.DisableIPv6 = true // an IPv4 listen address has no IPv6 twin
	}
	cfg.DataDir = c.DataDir
	cfg.Slogger = log.With("component", "torrent")
	if c.PublicAddr != "" {
		if h, _, err := net.SplitHostPort(c.PublicAddr); err == nil {
			if ip := net.ParseIP(h); ip != nil && ip.To4() != nil {
				cfg.PublicIp4 = ip
			}
		}
	}
	st := storage.NewFileOpts(storage.NewFileClientOpts{ClientBaseDir: c.DataDir, UsePartFiles: g.Some(true)})
	cfg.DefaultStorage = st
	cl, err := torrent.NewClient(cfg)
	if err != nil {
		st.Close()
		return nil, nil, fmt.Errorf("torrent client: %w", err)
	}
	return cl, st, nil
}

// recycle replaces the client to release what v1.61 keeps of dropped
// torrents, and re-adds every current torrent from its verified files.
func (s *Service) recycle(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	host, _, _ := net.SplitHostPort(s.Config.ListenAddr)
	// A new client starts its torrents' statistics from zero.
	s.snapUploaded = s.snapUploadedLocked()
	s.client.Close()
	s.storage.Close()
	// The old client's sockets take a moment to free the port.
	var err error
	for try := 0; try < 50; try++ {
		if err = s.start(host); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	for c, mi := range s.meta {
		t, err := s.client.AddTorrent(mi)
		if err != nil {
			return fmt.Errorf("re-add %s: %w", c, err)
		}
		s.seeding[c] = t
	}
	for c, t := range s.seeding {
		if err := waitComplete(ctx, t); err != nil {
			return fmt.Errorf("re-add %s: %w", c, err)
		}
	}
	for c := range s.snaps {
		for _, sn := range s.snaps[c] {
			sn.t = nil
			if err := s.openSnapshotLocked(sn); err != nil {
				s.Logger.Warn("superseded torrent not re-added after recycling", "community", c, "infohash", sn.ih.HexString(), "err", err)
			}
		}
		s.dropSnapshotsLocked(c, "not re-added after recycling", func(_ int, sn *snapshot) bool { return sn.t == nil })
	}
	s.Logger.Info("torrent client recycled", "torrents", len(s.seeding))
	return nil
}

// follow applies every committed state and registry change, the initial
// values first (which re-seeds everything after a restart).
func (s *Service) follow(ctx context.Context) error {
	states, err := s.Bus.State.Watch(ctx, "*")
	if err != nil {
		return err
	}
	defer states.Stop()
	coms, err := s.Bus.Communities.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer coms.Stop()
	pending := map[string]bool{}
	known := map[string]bool{} // every community key seen
	retry := time.NewTicker(5 * time.Second)
	defer retry.Stop()
	// take records an update; a closed channel means the connection is gone.
	take := func(e jetstream.KeyValueEntry, ok bool) error {
		if !ok {
			return errors.New("kv watch closed")
		}
		if e != nil {
			pending[e.Key()] = true
			if _, err := archive.ParseCommunityID(e.Key()); err == nil {
				known[e.Key()] = true
			}
		}
		return nil
	}
	for {
		var err error
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-states.Updates():
			err = take(e, ok)
		case e, ok := <-coms.Updates():
			err = take(e, ok)
		case <-s.view.Changes():
			// Placements move: look at every community again.
			for c := range known {
				pending[c] = true
			}
			s.Logger.Info("seeders changed; re-placing communities", "members", len(s.members()), "communities", len(known))
		case <-retry.C:
		}
		// Drain what is already queued so bursts coalesce.
		for drained := false; !drained && err == nil; {
			select {
			case e, ok := <-states.Updates():
				err = take(e, ok)
			case e, ok := <-coms.Updates():
				err = take(e, ok)
			default:
				drained = true
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for c := range pending {
			if ctx.Err() != nil {
				return nil
			}
			if err := s.reconcile(ctx, c); errors.Is(err, errHandOff) {
				continue // still serving it until its new owners do
			} else if err != nil {
				s.metrics.failures.Inc()
				s.Logger.Warn("seeding failed; will retry", "community", c, "err", err)
				continue
			}
			delete(pending, c)
		}
	}
}

// reconcile makes what is seeded for community c match its committed state.
func (s *Service) reconcile(ctx context.Context, c string) error {
	id, err := archive.ParseCommunityID(c)
	if err != nil {
		return nil // not a community key
	}
	com, err := s.Registry.Get(ctx, id)
	if errors.Is(err, registry.ErrNotFound) || (err == nil && com.Disabled) {
		s.drop(c, "community disabled or removed")
		return nil
	}
	if err != nil {
		return err
	}
	st, _, err := s.State.GetBuild(ctx, c)
	if err != nil {
		return err
	}
	if st.InfoHash == "" {
		return nil
	}
	mine, owners := s.owns(c)
	if !mine {
		return s.unowned(ctx, c, st.InfoHash, owners)
	}
	s.mu.Lock()
	cur := s.seeding[c]
	s.mu.Unlock()
	if cur == nil || cur.InfoHash().HexString() != st.InfoHash {
		if err := s.replace(ctx, id, st); err != nil {
			return err
		}
		if cur == nil {
			s.gained(ctx, c)
		}
	}
	// Seeding the current torrent: say so, which lets a seeder handing
	// the community over drop it.
	if err := s.serving.Set(ctx, c, s.self, st.InfoHash); err != nil {
		return fmt.Errorf("record serving: %w", err)
	}
	return nil
}

func (s *Service) drop(c, why string) {
	s.mu.Lock()
	t := s.seeding[c]
	delete(s.seeding, c)
	delete(s.meta, c)
	if t != nil {
		s.dropped++
	}
	s.dropSnapshotsLocked(c, why, func(int, *snapshot) bool { return true })
	s.mu.Unlock()
	if t != nil {
		t.Drop()
		s.leaveSwarm(t.InfoHash())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.serving.Clear(ctx, c, s.self.ID); err != nil {
			s.Logger.Debug("serving record not cleared", "community", c, "err", err)
		}
		cancel()
		s.Logger.Info("unseeded", "community", c, "infohash", t.InfoHash().HexString(), "reason", why)
	}
}

// Seeding returns the infohash seeded for a community, or "".
func (s *Service) Seeding(c string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.seeding[c]; t != nil {
		return t.InfoHash().HexString()
	}
	return ""
}
