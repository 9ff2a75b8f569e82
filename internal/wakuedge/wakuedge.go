// Package wakuedge is the Waku edge service: it takes each announcement the
// announcer publishes on archive.announced.<community> (the signed
// ApplicationMetadataMessage of type 43, facts in headers) and sends the same
// bytes to the community's members over Waku relay, as status-go's
// SendPublic would, on both chats members listen on:
//
//   - "<0xID>-memberUpdate", the universal chat current clients use for
//     CommunityMessageArchiveLink (type 43);
//   - "<0xID>-magnetlinks", the legacy chat older clients listen on.
//
// Each is wrapped by wakuwire.PublicMessageWithKey (ProtocolMessage, rfc26
// symmetric payload with the chat-derived key, WakuMessage) and published on
// the community's shard pubsub topic (registry.Community.Shard, default
// wakuwire.DefaultCommunityShard).
//
// Each message goes out by relay and, when Config.LightPushNodes are set, by
// lightpush v3 to each of them (the way through a service node should the
// network require RLN proofs for relay). An announcement counts as delivered
// when at least MinPeers relay peers took it or at least one service node
// accepted it; otherwise it is snoozed (waiting, not failing), so an
// isolated edge sends nothing into the void. What each announcement reached
// is recorded with it.
//
// Delivery is at least once, deduplicated by clock here: the last clock sent
// per community is kept in the community-state bucket (state.WakuKey), and an
// announcement at or below it is acknowledged without sending. A retry
// builds the messages again (new padding, so new Waku hashes) around the same
// application message. Members do not deduplicate by clock: a Status client
// skips only a link equal to the last one it processed, so a redelivered
// older link arriving while a newer one downloads restarts the download.
//
// On a protected shard (Config.ShardKeys) each message carries the shard
// key's signature in meta, as relay validators there require.
//
// The rfc26 payload signer is the edge's own secp256k1 key (in the fleet,
// the Waku node key): receivers only recover it; the application message
// inside carries the community's signature.
package wakuedge

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/waku/lightpush"
	"github.com/archivefleet/archivefleet/internal/waku/rpc"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
)

// Defaults.
const (
	DefaultClusterID uint16 = 16
	DefaultShard     uint16 = 32
	// DefaultNoPeersSnooze is the longest an announcement waits when the
	// shard has too few relay peers (bus.SnoozeFor: jittered, half to all of
	// it).
	DefaultNoPeersSnooze = 5 * time.Second
)

// Peer is the Waku peer the edge publishes through (*node.Node).
type Peer interface {
	Publish(ctx context.Context, pubsubTopic string, m *wakuwire.Message) ([32]byte, error)
	TopicPeers(pubsubTopic string) int
	LightPush(ctx context.Context, service peer.AddrInfo, pubsubTopic string, m *wakuwire.Message) (lightpush.Result, error)
}

// Config shapes the edge.
type Config struct {
	// InstallationID goes into each ProtocolMessage (status-go's sender
	// installation); any stable string.
	InstallationID string
	// MinPeers is the fewest relay peers on a community's shard to publish;
	// 0 publishes even with none (offline all-in-one).
	MinPeers int
	// ClusterID is the Waku cluster; default DefaultClusterID.
	ClusterID uint16
	// Topics, when set, are the pubsub topics the peer relays: a community
	// on another shard fails with a clear error instead of waiting forever.
	Topics []string
	// Signer signs the rfc26 payloads (required).
	Signer *secp256k1.PrivateKey
	// LightPushNodes are lightpush v3 service nodes every message is also
	// pushed to.
	LightPushNodes []peer.AddrInfo
	// ShardKeys are the private keys of protected shards the operator holds:
	// messages on them carry the meta signature.
	ShardKeys map[uint16]*secp256k1.PrivateKey
	// NoPeersSnooze: default DefaultNoPeersSnooze.
	NoPeersSnooze time.Duration
	// FlushEvery is how often received messages are ingested. Default
	// DefaultFlushEvery.
	FlushEvery time.Duration
	// MaxPending bounds received messages waiting for ingest. Default
	// DefaultMaxPending.
	MaxPending int
	// SummaryEvery is how often the receiver logs what it heard. Default
	// DefaultSummaryEvery.
	SummaryEvery time.Duration
	// StoreNodes are the Store v3 nodes back-fill asks (all of them: the
	// union of what they hold is ingested).
	StoreNodes []peer.AddrInfo
	// BackfillWindow is how far back a first back-fill reaches. Default
	// DefaultBackfillWindow.
	BackfillWindow time.Duration
	// BackfillCheck is how often communities are checked for a due
	// back-fill. Default DefaultBackfillCheck.
	BackfillCheck time.Duration
	// BackfillRetry is the wait after a failed back-fill. Default
	// DefaultNoPeersSnooze.
	BackfillRetry time.Duration
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	c.ClusterID = cmp.Or(c.ClusterID, DefaultClusterID)
	c.NoPeersSnooze = cmp.Or(c.NoPeersSnooze, DefaultNoPeersSnooze)
	c.FlushEvery = cmp.Or(c.FlushEvery, DefaultFlushEvery)
	c.MaxPending = cmp.Or(c.MaxPending, DefaultMaxPending)
	c.SummaryEvery = cmp.Or(c.SummaryEvery, DefaultSummaryEvery)
	c.BackfillWindow = cmp.Or(c.BackfillWindow, DefaultBackfillWindow)
	c.BackfillCheck = cmp.Or(c.BackfillCheck, DefaultBackfillCheck)
	c.BackfillRetry = cmp.Or(c.BackfillRetry, DefaultNoPeersSnooze)
	return c
}

// validate reports a setting no default can fix.
func (c Config) validate() error {
	switch {
	case c.Signer == nil:
		return errors.New("wakuedge: a signer key is required")
	case c.MinPeers < 0:
		return errors.New("wakuedge: MinPeers must not be negative")
	case c.NoPeersSnooze < 0 || c.FlushEvery < 0 || c.SummaryEvery < 0 || c.BackfillWindow < 0 || c.BackfillCheck < 0 || c.BackfillRetry < 0:
		return errors.New("wakuedge: a negative period (NoPeersSnooze, FlushEvery, SummaryEvery or a back-fill one)")
	case c.MaxPending < 0:
		return fmt.Errorf("wakuedge: MaxPending %d is negative", c.MaxPending)
	}
	return nil
}

// Service is the Waku edge.
type Service struct {
	Bus      *bus.Bus
	Registry *registry.Registry
	State    *state.Store
	Peer     Peer
	// Listen and Ingest, both set, make the edge hear the registered
	// communities' chats and archive what it receives.
	Listen Listener
	Ingest Ingester
	// StoreClient, with Config.StoreNodes and Ingest set, back-fills the
	// communities from Store v3 nodes.
	StoreClient StoreQuerier
	Config      Config
	Logger      *slog.Logger
	// Now is the clock source; tests may pin it.
	Now func() time.Time

	published *prometheus.CounterVec
	skipped   *prometheus.CounterVec
	peers     prometheus.Gauge
	noPeers   prometheus.Counter
	pushes    *prometheus.CounterVec
	received  *prometheus.CounterVec
	tally     *tally
	keyUses   *prometheus.CounterVec

	backfills     *prometheus.CounterVec
	backfilled    *prometheus.CounterVec
	backfillPages prometheus.Counter
	worker        *bus.WorkerMetrics

	keys            *keyCache
	routes          *routes
	routesLoaded    chan struct{} // closed once every registered community is routed
	registryChanged chan struct{}
}

// keyCache holds ChatKey per chat id, derived once (slow by design).
type keyCache struct {
	mu sync.Mutex
	m  map[string][]byte
}

// New fills defaults and registers the edge's metrics on reg.
func New(s Service, reg prometheus.Registerer) (*Service, error) {
	if s.Bus == nil || s.Registry == nil || s.Peer == nil {
		return nil, errors.New("wakuedge: Bus, Registry and Peer are required")
	}
	if err := s.Config.validate(); err != nil {
		return nil, err
	}
	s.Config = s.Config.withDefaults()
	s.tally = &tally{}
	if len(s.Config.StoreNodes) > 0 && (s.StoreClient == nil || s.Ingest == nil) {
		return nil, errors.New("wakuedge: store nodes need a StoreClient and Ingest")
	}
	if (s.Listen == nil) != (s.Ingest == nil) {
		return nil, errors.New("wakuedge: Listen and Ingest go together")
	}
	if s.State == nil {
		s.State = &state.Store{KV: s.Bus.State}
	}
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	f := promauto.With(reg)
	s.published = f.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_waku_announcements_published_total",
		Help: "Announcements published over Waku relay, by chat (memberUpdate, magnetlinks)."}, []string{"chat"})
	s.skipped = f.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_waku_announcements_skipped_total",
		Help: "Announcements not sent, by reason (duplicate: clock already sent; unregistered)."}, []string{"reason"})
	s.peers = f.NewGauge(prometheus.GaugeOpts{Name: "archivefleet_waku_publish_peers",
		Help: "Relay peers on the shard at the last publish."})
	s.noPeers = f.NewCounter(prometheus.CounterOpts{Name: "archivefleet_waku_no_peers_snoozes_total",
		Help: "Announcements snoozed because neither MIN_PEERS relay peers nor a lightpush service node took them."})
	s.pushes = f.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_waku_lightpush_total",
		Help: "Lightpush requests to service nodes, by outcome (the status code, or error when no answer came)."}, []string{"outcome"})
	s.received = f.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_waku_received_total",
		Help: "Messages received on the peer's pubsub topics, by outcome: stored, duplicate, late, refused, failed (ingest), " +
			"undecryptable, unsigned, malformed, overflow (dropped while ingest was down), unregistered, foreign (not a registered chat)."},
		[]string{"outcome"})
	s.keyUses = f.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_waku_chat_keys_total",
		Help: "Chat key look-ups: hit (cached) or derived (PBKDF2, 65,356 rounds)."}, []string{"result"})
	s.backfills = f.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_waku_backfills_total",
		Help: "Community back-fills from Store v3 nodes, by result (done, failed)."}, []string{"result"})
	s.backfilled = f.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_waku_backfill_messages_total",
		Help: "Messages back-filled from store nodes, by outcome (as archivefleet_waku_received_total)."}, []string{"outcome"})
	s.backfillPages = f.NewCounter(prometheus.CounterOpts{Name: "archivefleet_waku_backfill_pages_total",
		Help: "Store v3 pages read by back-fill."})
	s.worker = bus.NewWorkerMetrics(reg)
	s.keys = &keyCache{m: map[string][]byte{}}
	s.registryChanged = make(chan struct{}, 1)
	s.routesLoaded = make(chan struct{})
	s.routes = &routes{byCommunity: map[string][]route{}, byTopic: map[string][]route{}}
	return &s, nil
}

// Run sends announcements (the waku consumer of ARCHIVE_ANNOUNCED, one slot
// so each community's stay in order) and, with Listen and Ingest set,
// archives what the peer hears on the registered communities' chats, until
// ctx ends.
func (s *Service) Run(ctx context.Context) error {
	s.Logger.Info("waku edge started", "signer", hex.EncodeToString(s.Config.Signer.PubKey().SerializeCompressed()),
		"min_peers", s.Config.MinPeers, "cluster", s.Config.ClusterID, "receive", s.Listen != nil)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	run := func(i int, fn func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				errs[i] = err
				cancel() // one part failing stops the service: the supervisor restarts it whole
			}
		}()
	}
	run(0, func(ctx context.Context) error {
		return bus.KindAnnounced.Work(ctx, s.Bus, bus.Workers{Slots: 1, Logger: s.Logger, Metrics: s.worker}, s.Handle)
	})
	if s.Listen != nil {
		run(1, s.watchRegistry)
		run(2, s.receive)
	}
	if len(s.Config.StoreNodes) > 0 {
		if s.Listen == nil {
			run(1, s.watchRegistry)
		}
		run(3, s.backfill)
	}
	wg.Wait()
	return errors.Join(errs...)
}

// watchRegistry keeps the content-topic routes in step with the registry.
func (s *Service) watchRegistry(ctx context.Context) error {
	return s.Registry.Watch(ctx, func(id string, c *registry.Community) {
		rs := s.routesFor(c)
		s.routes.set(id, rs)
		select {
		case s.registryChanged <- struct{}{}:
		default:
		}
		s.Logger.Debug("waku receive routes", "community", id, "chats", len(rs))
	}, func() { close(s.routesLoaded) })
}

// Chats are the chats an announcement goes to, current first.
func Chats(c string) []string {
	return []string{wakuwire.UniversalChatID(c), wakuwire.MagnetlinksChatID(c)}
}

// Shard is a community's shard.
func Shard(com *registry.Community) uint16 {
	if com.Shard != nil {
		return *com.Shard
	}
	return DefaultShard
}

// PubsubTopic is a community's shard topic in cluster.
func PubsubTopic(cluster uint16, com *registry.Community) string {
	return wakuwire.ShardTopic(cluster, Shard(com))
}

func (s *Service) chatKey(chat string) []byte {
	s.keys.mu.Lock()
	defer s.keys.mu.Unlock()
	k, ok := s.keys.m[chat]
	if !ok {
		k = wakuwire.ChatKey(chat)
		s.keys.m[chat] = k
		s.keyUses.WithLabelValues("derived").Inc()
	} else {
		s.keyUses.WithLabelValues("hit").Inc()
	}
	return k
}

// Handle sends one announcement (see the package doc).
func (s *Service) Handle(ctx context.Context, ev bus.Raw, _ bus.Delivery) error {
	c := strings.TrimPrefix(ev.Subject, bus.SubjectAnnounced(""))
	id, err := archive.ParseCommunityID(c)
	if err != nil {
		return fmt.Errorf("%w: subject %q: %w", bus.ErrMalformed, ev.Subject, err)
	}
	c = id.String()
	clock, err := strconv.ParseUint(ev.Header.Get(bus.HeaderClock), 10, 64)
	if err != nil || clock == 0 {
		return fmt.Errorf("%w: %s header %q", bus.ErrMalformed, bus.HeaderClock, ev.Header.Get(bus.HeaderClock))
	}
	if len(ev.Data) == 0 {
		return fmt.Errorf("%w: empty announcement", bus.ErrMalformed)
	}
	infoHash := ev.Header.Get(bus.HeaderInfohash)
	last, rev, err := s.State.GetWaku(ctx, c)
	if err != nil {
		return bus.Unavailable("waku state read", err)
	}
	if clock <= last.Clock {
		s.skipped.WithLabelValues("duplicate").Inc()
		s.Logger.Debug("announcement already sent", "community", c, "clock", clock, "last", last.Clock)
		return nil
	}
	com, err := s.Registry.Get(ctx, id)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		s.skipped.WithLabelValues("unregistered").Inc()
		return nil
	case err != nil:
		return bus.Unavailable("registry read", err)
	}
	topic := PubsubTopic(s.Config.ClusterID, com)
	if len(s.Config.Topics) > 0 && !slices.Contains(s.Config.Topics, topic) {
		return fmt.Errorf("community %s is on %s, which this edge does not relay (add its shard to WAKU_SHARDS)", c, topic)
	}
	peers := s.Peer.TopicPeers(topic)
	if peers < s.Config.MinPeers && len(s.Config.LightPushNodes) == 0 {
		s.noPeers.Inc()
		return bus.SnoozeFor(s.Config.NoPeersSnooze, fmt.Sprintf("%d relay peers on %s, need %d", peers, topic, s.Config.MinPeers))
	}
	now := s.Now()
	shardKey := s.Config.ShardKeys[Shard(com)]
	var hashes []string
	var wakuBytes, pushed, pushRelayed, chatsPushed int
	var pushErrs []error
	for _, chat := range Chats(c) {
		m, err := wakuwire.PublicMessageWithKey(chat, s.chatKey(chat), s.Config.InstallationID, ev.Data, s.Config.Signer, now)
		if err != nil {
			return bus.Permanent(fmt.Errorf("build waku message for %s: %w", chat, err))
		}
		if shardKey != nil {
			if m.Meta, err = wakuwire.SignMeta(topic, m, shardKey); err != nil {
				return bus.Permanent(fmt.Errorf("sign meta for %s: %w", chat, err))
			}
		}
		// Relay even below MinPeers when lightpush may still deliver: a
		// relay peer that is there gets it sooner.
		h, err := s.Peer.Publish(ctx, topic, m)
		if err != nil {
			return fmt.Errorf("publish on %s for %s: %w", topic, chat, err)
		}
		accepted := 0
		for _, node := range s.Config.LightPushNodes {
			res, err := s.Peer.LightPush(ctx, node, topic, m)
			s.pushes.WithLabelValues(pushOutcome(err)).Inc()
			if err != nil {
				pushErrs = append(pushErrs, fmt.Errorf("%s via %s: %w", chat, node.ID, err))
				continue
			}
			accepted++
			pushRelayed += int(res.RelayPeers)
		}
		if accepted > 0 {
			chatsPushed++
		}
		pushed += accepted
		s.published.WithLabelValues(strings.TrimPrefix(chat, c+"-")).Inc()
		hashes = append(hashes, hex.EncodeToString(h[:]))
		wakuBytes = len(m.Marshal())
	}
	nChats := len(Chats(c))
	if peers < s.Config.MinPeers && chatsPushed < nChats {
		// Neither way delivered every message: send again later.
		s.noPeers.Inc()
		return bus.SnoozeFor(s.Config.NoPeersSnooze, fmt.Sprintf("%d relay peers on %s (need %d) and lightpush delivered %d of %d messages: %v",
			peers, topic, s.Config.MinPeers, chatsPushed, nChats, errors.Join(pushErrs...)))
	}
	if len(pushErrs) > 0 {
		s.Logger.Warn("lightpush failed for some service nodes; relay or another node delivered", "community", c, "clock", clock,
			"err", errors.Join(pushErrs...))
	}
	s.peers.Set(float64(peers))
	rec := &state.Waku{Clock: clock, InfoHash: infoHash, Hashes: hashes, At: now.UTC(), RelayPeers: peers,
		LightPushAccepted: pushed, LightPushRelayPeers: pushRelayed}
	if _, err := s.State.Put(ctx, state.WakuKey(c), rec, rev); err != nil {
		// Sent; not recorded: a redelivery sends it again. Members skip it
		// only while it is still the last link they processed.
		s.Logger.Warn("waku announcement sent but not recorded", "community", c, "clock", clock, "err", err)
	}
	s.Logger.Info("announcement published on waku", "community", c, "clock", clock, "infohash", infoHash,
		"pubsub_topic", topic, "hashes", hashes, "relay_peers", peers, "lightpush_accepted", pushed,
		"lightpush_relay_peers", pushRelayed, "protected_shard", shardKey != nil, "amm_bytes", len(ev.Data), "waku_message_bytes", wakuBytes)
	return nil
}

// pushOutcome labels a lightpush result: its status code, or "error".
func pushOutcome(err error) string {
	var lpErr *rpc.StatusError[lightpush.Status]
	switch {
	case err == nil:
		return strconv.FormatUint(uint64(lightpush.Success), 10)
	case errors.As(err, &lpErr):
		return strconv.FormatUint(uint64(lpErr.Code), 10)
	}
	return "error"
}
