// Package node is the fleet's own Waku peer: a libp2p host (TCP and
// WebSocket, noise, yamux) with a node key kept on disk, static peers kept
// connected with back-off, peers found by DNS discovery, a gater and a
// connection manager capping them, and the protocols wired together on it:
// 11/WAKU2-RELAY (internal/waku/relay) on the configured static-sharding
// pubsub topics, 66/WAKU2-METADATA (a peer of another cluster is dropped),
// and, when configured, the Store v3 and lightpush v3 services, which it
// feeds and relays for; it is also the host of their clients. go-waku is
// not used (it is not on the module proxy): wire formats come from
// internal/wakuwire and from code generated from the Waku .proto files.
package node

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/archivefleet/archivefleet/internal/waku/lightpush"
	"github.com/archivefleet/archivefleet/internal/waku/metadata"
	"github.com/archivefleet/archivefleet/internal/waku/ratelimit"
	"github.com/archivefleet/archivefleet/internal/waku/relay"
	"github.com/archivefleet/archivefleet/internal/waku/store"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/libp2p/go-libp2p/p2p/transport/websocket"
	ma "github.com/multiformats/go-multiaddr"
)

// UserAgent is what identify tells other peers (the name the fleet's peer
// has always given, whatever its package is called).
const UserAgent = "archivefleet-wakupeer"

// subscriberBuffer is the channel size of a Subscribe reader.
const subscriberBuffer = 256

// stableConnection: a static peer connection that lasted this long resets
// the back-off (a peer dropped right after metadata keeps backing off).
const stableConnection = 10 * time.Second

// ErrTopicNotJoined is returned for a pubsub topic outside Config.Shards.
var ErrTopicNotJoined = errors.New("waku: pubsub topic not joined")

// Received is a valid WakuMessage received on a joined pubsub topic.
type Received struct {
	PubsubTopic string
	Message     *wakuwire.Message
	Hash        [32]byte // 14/WAKU2-MESSAGE deterministic hash
	From        peer.ID  // the peer that forwarded it (not necessarily the author)
}

// Node is a running Waku peer.
type Node struct {
	cfg     Config
	log     *slog.Logger
	host    host.Host
	ps      *pubsub.PubSub
	metrics *Metrics
	static  []peer.AddrInfo
	gater   *gater

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	topics    map[string]*joined        // fixed before the host is notified of anything
	kick      map[peer.ID]chan struct{} // static peers, nudged on disconnect; fixed likewise
	store     *store.Service            // Config.StoreService; nil when off
	lightPush *lightpush.Service        // Config.LightPushService; nil when off

	relayLimit     *ratelimit.Limiter // per forwarding peer (the relay validator)
	lightPushLimit *ratelimit.Limiter // per client and global (the lightpush service)

	mu     sync.Mutex
	closed bool

	scoreMu sync.Mutex
	scores  map[peer.ID]float64 // gossipsub's, refreshed every second
}

type joined struct {
	topic *pubsub.Topic
	sub   *pubsub.Subscription

	mu   sync.Mutex       // guards mesh
	mesh map[peer.ID]bool // from the GRAFT/PRUNE trace

	subMu sync.Mutex // guards subs and next
	subs  map[int]chan Received
	next  int
}

// New starts a node: it opens the listeners, joins the shards' pubsub
// topics, and starts dialling the static peers. When ctx ends, relaying and
// dialling stop; Close (always needed) also closes the host.
func New(ctx context.Context, cfg Config) (*Node, error) {
	cfg = cfg.withDefaults()
	pc, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	var key crypto.PrivKey
	if cfg.KeyFile != "" {
		key, err = LoadOrCreateKey(cfg.KeyFile)
	} else {
		key, _, err = crypto.GenerateSecp256k1Key(rand.Reader)
	}
	if err != nil {
		return nil, err
	}
	var metrics *Metrics
	if cfg.Registerer != nil {
		if metrics, err = NewMetrics(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("waku node: metrics: %w", err)
		}
	}
	// Trim to 80 % of MaxPeers once above it; a new connection gets a
	// minute's grace so metadata and the mesh can form before it is judged.
	cm, err := connmgr.NewConnManager(max(cfg.MaxPeers*4/5, len(pc.static)+1), cfg.MaxPeers, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		metrics.unregister(cfg.Registerer)
		return nil, fmt.Errorf("waku node: connection manager: %w", err)
	}
	g := newGater()
	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.ConnectionManager(cm),
		libp2p.ConnectionGater(g),
		libp2p.ListenAddrs(pc.listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(websocket.New),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(), // ours are in Metrics; libp2p's would go to the global registry
		libp2p.UserAgent(UserAgent),
	}
	if len(pc.announce) > 0 {
		announce := pc.announce
		opts = append(opts, libp2p.AddrsFactory(func([]ma.Multiaddr) []ma.Multiaddr { return announce }))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		metrics.unregister(cfg.Registerer)
		return nil, fmt.Errorf("waku node: libp2p host: %w", err)
	}
	g.limit(h.Network(), cfg.MaxPeers, pc.static, metrics)
	pctx, cancel := context.WithCancel(ctx)
	n := &Node{
		cfg: cfg, log: cfg.Logger.With("peer_id", h.ID()), host: h, metrics: metrics, static: pc.static, gater: g,
		ctx: pctx, cancel: cancel,
		topics: map[string]*joined{},
		kick:   map[peer.ID]chan struct{}{},

		relayLimit:     ratelimit.New(relay.PeerRate, relay.PeerBurst, 0, 0),
		lightPushLimit: ratelimit.New(lightpush.PeerRate, lightpush.PeerBurst, lightpush.Rate, lightpush.Burst),
	}
	if cfg.StoreService {
		n.store = store.NewService(store.ServiceConfig{Retention: cfg.StoreRetention, Capacity: cfg.StoreCapacity,
			MaxBytes: cfg.StoreMaxBytes, Metrics: metrics.store(), Logger: n.log})
	}
	for _, s := range cfg.Shards {
		n.topics[wakuwire.ShardTopic(cfg.ClusterID, s)] = &joined{subs: map[int]chan Received{}, mesh: map[peer.ID]bool{}}
	}
	for _, ai := range n.static {
		n.kick[ai.ID] = make(chan struct{}, 1)
		// The operator chose them: never trimmed.
		cm.Protect(ai.ID, "static")
	}
	fail := func(err error) (*Node, error) {
		n.mu.Lock()
		n.closed = true
		n.mu.Unlock()
		cancel()
		n.wg.Wait()
		h.Close()
		metrics.unregister(cfg.Registerer)
		return nil, err
	}
	h.SetStreamHandler(metadata.Protocol, n.handleMetadata)
	h.Network().Notify(&network.NotifyBundle{ConnectedF: n.onConnected, DisconnectedF: n.onDisconnected})

	n.ps, err = relay.NewGossipSub(pctx, h, slices.Collect(maps.Keys(n.topics)), pubsub.WithRawTracer(&meshTracer{n: n}),
		pubsub.WithPeerScoreInspect(n.setScores, time.Second))
	if err != nil {
		return fail(fmt.Errorf("waku node: gossipsub: %w", err))
	}
	validator := relay.NewValidator(h.ID(), n.relayLimit, metrics.relay(), n.log)
	for name, j := range n.topics {
		if err := n.ps.RegisterTopicValidator(name, validator.Validate); err != nil {
			return fail(fmt.Errorf("waku node: validator for %s: %w", name, err))
		}
		if j.topic, err = n.ps.Join(name); err != nil {
			return fail(fmt.Errorf("waku node: joining %s: %w", name, err))
		}
		// go-waku's buffer (DefaultRelaySubscriptionBufferSize): pubsub's default of
		// 32 drops messages in bursts before the store and Subscribe see them.
		if j.sub, err = j.topic.Subscribe(pubsub.WithBufferSize(1024)); err != nil {
			return fail(fmt.Errorf("waku node: subscribing %s: %w", name, err))
		}
		n.wg.Add(1)
		go n.readTopic(name, j)
	}
	if cfg.LightPushService {
		// Only now: a push publishes on a joined topic.
		n.lightPush = lightpush.NewService(lightpush.ServiceConfig{Relay: n, PubsubTopics: n.PubsubTopics(),
			Limit: n.lightPushLimit, Metrics: metrics.lightPush(), Logger: n.log})
		h.SetStreamHandler(lightpush.Protocol, func(s network.Stream) { n.lightPush.Handle(n.ctx, s) })
	}
	if cfg.StoreService {
		// Only now: the store is fed by the topics' readers.
		h.SetStreamHandler(store.Protocol, n.store.Handle)
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.store.Run(n.ctx)
		}()
	}
	for _, ai := range n.static {
		n.wg.Add(1)
		go n.keepConnected(ai, n.kick[ai.ID])
	}
	if len(cfg.DNSDiscovery) > 0 {
		n.wg.Add(1)
		go n.discover()
	}
	n.log.Info("waku peer started", "addrs", h.Addrs(), "cluster", cfg.ClusterID, "shards", cfg.Shards, "static_peers", len(n.static), "dns_discovery", cfg.DNSDiscovery)
	return n, nil
}

func (n *Node) setScores(m map[peer.ID]float64) {
	n.scoreMu.Lock()
	n.scores = m
	n.scoreMu.Unlock()
}

// Score is the gossipsub score of a connected peer as of the last second
// (0 for a peer not scored yet).
func (n *Node) Score(id peer.ID) float64 {
	n.scoreMu.Lock()
	defer n.scoreMu.Unlock()
	return n.scores[id]
}

// ID is the peer's libp2p peer id.
func (n *Node) ID() peer.ID { return n.host.ID() }

// Host is the underlying libp2p host.
func (n *Node) Host() host.Host { return n.host }

// Addrs are the peer's listen addresses with /p2p/<id>, ready to be another
// peer's static peers.
func (n *Node) Addrs() []ma.Multiaddr {
	addrs, _ := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()})
	return addrs
}

// PubsubTopics are the joined pubsub topics.
func (n *Node) PubsubTopics() []string {
	out := make([]string, 0, len(n.topics))
	for _, s := range n.cfg.Shards {
		out = append(out, wakuwire.ShardTopic(n.cfg.ClusterID, s))
	}
	return out
}

// Publish validates m and publishes it on pubsubTopic, returning its
// 14/WAKU2-MESSAGE hash. Flood publish sends it to every known peer of the
// topic, mesh or not. m must pass the relay rules other peers apply: at
// most relay.MaxWakuMessageSize encoded, and a timestamp within
// relay.MaxClockGapSeconds of now.
func (n *Node) Publish(ctx context.Context, pubsubTopic string, m *wakuwire.Message) ([32]byte, error) {
	j, ok := n.topics[pubsubTopic]
	if !ok {
		return [32]byte{}, fmt.Errorf("%w: %s", ErrTopicNotJoined, pubsubTopic)
	}
	if err := m.Validate(); err != nil {
		return [32]byte{}, err
	}
	data := m.Marshal()
	if reason := relay.CheckMessage(m, len(data), time.Now()); reason != "" {
		return [32]byte{}, fmt.Errorf("waku node: publish on %s: %s", pubsubTopic, relay.DescribeReject(reason, m, time.Now()))
	}
	if err := j.topic.Publish(ctx, data); err != nil {
		return [32]byte{}, fmt.Errorf("waku node: publish on %s: %w", pubsubTopic, err)
	}
	n.metrics.published(pubsubTopic)
	return wakuwire.Hash(pubsubTopic, m), nil
}

// Subscribe returns the valid messages other peers relay on pubsubTopic, a
// joined topic, until cancel is called or the peer closes (the channel is
// closed then). A reader that falls subscriberBuffer messages behind misses
// messages (counted in Metrics.Relay.Dropped) rather than stalling relay.
func (n *Node) Subscribe(pubsubTopic string) (<-chan Received, func(), error) {
	j, ok := n.topics[pubsubTopic]
	if !ok {
		return nil, nil, fmt.Errorf("%w: %s", ErrTopicNotJoined, pubsubTopic)
	}
	ch := make(chan Received, subscriberBuffer)
	j.subMu.Lock()
	defer j.subMu.Unlock()
	if j.subs == nil { // reader ended: peer closed
		close(ch)
		return ch, func() {}, nil
	}
	id := j.next
	j.next++
	j.subs[id] = ch
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			j.subMu.Lock()
			defer j.subMu.Unlock()
			if c, ok := j.subs[id]; ok {
				delete(j.subs, id)
				close(c)
			}
		})
	}, nil
}

func (n *Node) readTopic(name string, j *joined) {
	defer n.wg.Done()
	defer func() {
		j.subMu.Lock()
		for _, c := range j.subs {
			close(c)
		}
		j.subs = nil
		j.subMu.Unlock()
	}()
	for {
		msg, err := j.sub.Next(n.ctx)
		if err != nil {
			return
		}
		wm, ok := msg.ValidatorData.(*wakuwire.Message)
		if !ok {
			continue
		}
		// gossipsub keeps msg for gossip for 6 heartbeats; the decoded copy
		// (as large as the message) need not stay with it.
		msg.ValidatorData = nil
		n.store.Add(name, wm) // ours too; a no-op without StoreService
		if msg.ReceivedFrom == n.host.ID() {
			continue // our own publication
		}
		n.metrics.received(name)
		r := Received{PubsubTopic: name, Message: wm, Hash: wakuwire.Hash(name, wm), From: msg.ReceivedFrom}
		j.subMu.Lock()
		for _, c := range j.subs {
			select {
			case c <- r:
			default:
				n.metrics.dropped(name)
				n.log.Warn("waku relay: subscriber too slow, message dropped", "pubsub_topic", name)
			}
		}
		j.subMu.Unlock()
	}
}

// Ready is nil when at least one peer relays pubsubTopic (for /readyz).
func (n *Node) Ready(pubsubTopic string) error {
	if _, ok := n.topics[pubsubTopic]; !ok {
		return fmt.Errorf("%w: %s", ErrTopicNotJoined, pubsubTopic)
	}
	if len(n.ps.ListPeers(pubsubTopic)) == 0 {
		return fmt.Errorf("waku: no relay peer on %s", pubsubTopic)
	}
	return nil
}

// TopicPeers is the number of connected peers subscribed to pubsubTopic.
func (n *Node) TopicPeers(pubsubTopic string) int { return len(n.ps.ListPeers(pubsubTopic)) }

// MeshPeers is the number of gossipsub mesh peers on pubsubTopic.
func (n *Node) MeshPeers(pubsubTopic string) int {
	j, ok := n.topics[pubsubTopic]
	if !ok {
		return 0
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.mesh)
}

// Close stops dialling, leaves the topics and closes the host.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	n.cancel()
	for _, j := range n.topics {
		j.sub.Cancel()
	}
	n.wg.Wait()
	// Cancelling the context stopped gossipsub (topics go with it); closing
	// the host closes every connection and listener.
	return n.host.Close()
}

func (n *Node) onConnected(nw network.Network, c network.Conn) {
	n.metrics.setPeers(len(nw.Peers()))
	// At INFO: at the default level this is what says the Waku side is
	// alive. Once per peer, not per connection.
	if len(nw.ConnsToPeer(c.RemotePeer())) == 1 {
		n.log.Info("waku peer connected", "peer", c.RemotePeer().String(), "addr", c.RemoteMultiaddr().String(),
			"direction", c.Stat().Direction.String(), "peers", len(nw.Peers()))
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.wg.Add(1)
	n.mu.Unlock()
	go func() {
		defer n.wg.Done()
		n.checkMetadata(c.RemotePeer())
	}()
}

func (n *Node) onDisconnected(nw network.Network, c network.Conn) {
	n.metrics.setPeers(len(nw.Peers()))
	if nw.Connectedness(c.RemotePeer()) != network.Connected {
		n.log.Info("waku peer disconnected", "peer", c.RemotePeer().String(), "peers", len(nw.Peers()))
	}
	if kick := n.kick[c.RemotePeer()]; kick != nil {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
}

// keepConnected dials a static peer and re-dials it whenever it is
// disconnected, with exponential back-off (ReconnectMin..ReconnectMax, full
// jitter), until the peer closes.
func (n *Node) keepConnected(ai peer.AddrInfo, kick <-chan struct{}) {
	defer n.wg.Done()
	delay := n.cfg.ReconnectMin
	var connectedAt time.Time
	sleep := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-n.ctx.Done():
			return false
		}
	}
	backoff := func() bool {
		// Jitter: sleep between delay/2 and delay.
		d := delay/2 + mrand.N(delay/2+1)
		delay = min(2*delay, n.cfg.ReconnectMax)
		return sleep(d)
	}
	for n.ctx.Err() == nil {
		if n.host.Network().Connectedness(ai.ID) == network.Connected {
			select {
			case <-kick:
			case <-time.After(5 * time.Second):
			case <-n.ctx.Done():
				return
			}
			continue
		}
		if !connectedAt.IsZero() {
			// Just lost the connection.
			stable := time.Since(connectedAt) >= stableConnection
			connectedAt = time.Time{}
			if stable {
				delay = n.cfg.ReconnectMin
			} else if !backoff() {
				return
			}
			continue
		}
		// Our back-off replaces the swarm's (5 s base, per address), which
		// would otherwise refuse our retries for a peer that was down.
		if sw, ok := n.host.Network().(*swarm.Swarm); ok {
			sw.Backoff().Clear(ai.ID)
		}
		dctx, cancel := context.WithTimeout(n.ctx, n.cfg.DialTimeout)
		err := n.host.Connect(dctx, ai)
		cancel()
		if err == nil {
			connectedAt = time.Now()
			n.log.Info("connected to static peer", "static_peer", ai.ID)
			continue
		}
		if n.ctx.Err() != nil {
			return
		}
		n.log.Debug("dialling static peer failed", "static_peer", ai.ID, "err", err, "retry_in_max", delay)
		if !backoff() {
			return
		}
	}
}

// meshTracer follows gossipsub GRAFT/PRUNE to count mesh peers per topic.
type meshTracer struct {
	n *Node
}

func (t *meshTracer) mesh(topic string, id peer.ID, in bool) {
	j, ok := t.n.topics[topic]
	if !ok {
		return
	}
	j.mu.Lock()
	if in {
		j.mesh[id] = true
	} else {
		delete(j.mesh, id)
	}
	count := len(j.mesh)
	j.mu.Unlock()
	t.n.metrics.setMesh(topic, count)
}

func (t *meshTracer) Graft(p peer.ID, topic string) { t.mesh(topic, p, true) }
func (t *meshTracer) Prune(p peer.ID, topic string) { t.mesh(topic, p, false) }
func (t *meshTracer) RemovePeer(p peer.ID) {
	for topic := range t.n.topics {
		t.mesh(topic, p, false)
	}
}
func (t *meshTracer) AddPeer(peer.ID, protocol.ID)                         {}
func (t *meshTracer) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (t *meshTracer) OnClosedOutboundStream(peer.ID)                       {}
func (t *meshTracer) Join(string)                                          {}
func (t *meshTracer) Leave(string)                                         {}
func (t *meshTracer) ValidateMessage(*pubsub.Message)                      {}
func (t *meshTracer) DeliverMessage(*pubsub.Message)                       {}
func (t *meshTracer) DuplicateMessage(*pubsub.Message)                     {}
func (t *meshTracer) ThrottlePeer(peer.ID)                                 {}
func (t *meshTracer) RecvRPC(*pubsub.RPC)                                  {}
func (t *meshTracer) SendRPC(*pubsub.RPC, peer.ID)                         {}
func (t *meshTracer) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}
func (t *meshTracer) DropRPC(*pubsub.RPC, peer.ID)                         {}
func (t *meshTracer) UndeliverableMessage(*pubsub.Message)                 {}

// RejectMessage counts the messages gossipsub dropped because validation
// was overloaded (the validators count their own rejections).
func (t *meshTracer) RejectMessage(m *pubsub.Message, reason string) {
	switch reason {
	case pubsub.RejectValidationQueueFull, pubsub.RejectValidationThrottled:
		t.n.metrics.relay().Reject(m.GetTopic(), relay.RejectOverloaded)
	}
}
