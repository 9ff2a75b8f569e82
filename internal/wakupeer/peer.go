// Package wakupeer is the fleet's own Waku relay peer: a libp2p host (TCP
// and WebSocket, noise, yamux) running gossipsub as 11/WAKU2-RELAY on the
// configured static-sharding pubsub topics, the 66/WAKU2-METADATA protocol,
// and static peers kept connected with back-off. Wire formats come from
// internal/wakuwire; go-waku is not used (it is not on the module proxy),
// the parameters follow go-waku relay/config.go and nwaku
// waku_relay/protocol.nim (spec waku-edge.md §3).
package wakupeer

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/archivefleet/archivefleet/internal/wakuwire"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pubsubpb "github.com/libp2p/go-libp2p-pubsub/pb"
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

// RelayProtocol is 11/WAKU2-RELAY's gossipsub protocol id, the only one the
// peer speaks (no /meshsub ids: Waku nodes do not accept them).
const RelayProtocol = protocol.ID("/vac/waku/relay/2.0.0")

// UserAgent is what identify tells other peers.
const UserAgent = "archivefleet-wakupeer"

// subscriberBuffer is the channel size of a Subscribe reader.
const subscriberBuffer = 256

// stableConnection: a static peer connection that lasted this long resets
// the back-off (a peer dropped right after metadata keeps backing off).
const stableConnection = 10 * time.Second

// ErrTopicNotJoined is returned for a pubsub topic outside Config.Shards.
var ErrTopicNotJoined = errors.New("wakupeer: pubsub topic not joined")

// Received is a valid WakuMessage received on a joined pubsub topic.
type Received struct {
	PubsubTopic string
	Message     *wakuwire.Message
	Hash        [32]byte // 14/WAKU2-MESSAGE deterministic hash
	From        peer.ID  // the peer that forwarded it (not necessarily the author)
}

// Peer is a running Waku relay peer.
type Peer struct {
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

	topics map[string]*joined        // fixed before the host is notified of anything
	kick   map[peer.ID]chan struct{} // static peers, nudged on disconnect; fixed likewise
	store  *messageStore             // Config.StoreService; nil when off

	relayLimit     *limiter      // per forwarding peer (validate)
	lightPushLimit *limiter      // per client and global (handleLightPush)
	lightPushSlots chan struct{} // requests being served, at most lightPushMaxInFlight

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

// New starts a peer: it opens the listeners, joins the shards' pubsub topics,
// and starts dialling the static peers. When ctx ends, relaying and dialling
// stop; Close (always needed) also closes the host.
func New(ctx context.Context, cfg Config) (*Peer, error) {
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
			return nil, fmt.Errorf("wakupeer: metrics: %w", err)
		}
	}
	// Trim to 80 % of MaxPeers once above it; a new connection gets a
	// minute's grace so metadata and the mesh can form before it is judged.
	cm, err := connmgr.NewConnManager(max(cfg.MaxPeers*4/5, len(pc.static)+1), cfg.MaxPeers, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		metrics.unregister(cfg.Registerer)
		return nil, fmt.Errorf("wakupeer: connection manager: %w", err)
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
		return nil, fmt.Errorf("wakupeer: libp2p host: %w", err)
	}
	g.limit(h.Network(), cfg.MaxPeers, pc.static, metrics)
	pctx, cancel := context.WithCancel(ctx)
	p := &Peer{
		cfg: cfg, log: cfg.Logger.With("peer_id", h.ID()), host: h, metrics: metrics, static: pc.static, gater: g,
		ctx: pctx, cancel: cancel,
		topics: map[string]*joined{},
		kick:   map[peer.ID]chan struct{}{},
		store:  newMessageStore(cfg, metrics),

		relayLimit:     newLimiter(RelayPeerRate, RelayPeerBurst, 0, 0),
		lightPushLimit: newLimiter(LightPushPeerRate, LightPushPeerBurst, LightPushRate, LightPushBurst),
		lightPushSlots: make(chan struct{}, lightPushMaxInFlight),
	}
	for _, s := range cfg.Shards {
		p.topics[wakuwire.ShardTopic(cfg.ClusterID, s)] = &joined{subs: map[int]chan Received{}, mesh: map[peer.ID]bool{}}
	}
	for _, ai := range p.static {
		p.kick[ai.ID] = make(chan struct{}, 1)
		// The operator chose them: never trimmed.
		cm.Protect(ai.ID, "static")
	}
	fail := func(err error) (*Peer, error) {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		cancel()
		p.wg.Wait()
		h.Close()
		metrics.unregister(cfg.Registerer)
		return nil, err
	}
	h.SetStreamHandler(MetadataProtocol, p.handleMetadata)
	h.Network().Notify(&network.NotifyBundle{ConnectedF: p.onConnected, DisconnectedF: p.onDisconnected})

	p.ps, err = newRelay(pctx, h, slices.Collect(maps.Keys(p.topics)), pubsub.WithRawTracer(&meshTracer{p: p}),
		pubsub.WithPeerScoreInspect(p.setScores, time.Second))
	if err != nil {
		return fail(fmt.Errorf("wakupeer: gossipsub: %w", err))
	}
	for name, j := range p.topics {
		if err := p.ps.RegisterTopicValidator(name, p.validate); err != nil {
			return fail(fmt.Errorf("wakupeer: validator for %s: %w", name, err))
		}
		if j.topic, err = p.ps.Join(name); err != nil {
			return fail(fmt.Errorf("wakupeer: joining %s: %w", name, err))
		}
		// go-waku's buffer (DefaultRelaySubscriptionBufferSize): pubsub's default of
		// 32 drops messages in bursts before the store and Subscribe see them.
		if j.sub, err = j.topic.Subscribe(pubsub.WithBufferSize(1024)); err != nil {
			return fail(fmt.Errorf("wakupeer: subscribing %s: %w", name, err))
		}
		p.wg.Add(1)
		go p.readTopic(name, j)
	}
	if cfg.LightPushService {
		// Only now: a push publishes on a joined topic.
		h.SetStreamHandler(LightPushProtocol, p.handleLightPush)
	}
	if cfg.StoreService {
		// Only now: the store is fed by the topics' readers.
		h.SetStreamHandler(StoreProtocol, p.handleStore)
		p.wg.Add(1)
		go p.pruneStore()
	}
	for _, ai := range p.static {
		p.wg.Add(1)
		go p.keepConnected(ai, p.kick[ai.ID])
	}
	if len(cfg.DNSDiscovery) > 0 {
		p.wg.Add(1)
		go p.discover()
	}
	p.log.Info("waku peer started", "addrs", h.Addrs(), "cluster", cfg.ClusterID, "shards", cfg.Shards, "static_peers", len(p.static), "dns_discovery", cfg.DNSDiscovery)
	return p, nil
}

// newRelay creates gossipsub configured as 11/WAKU2-RELAY, with go-waku's
// parameters and peer scoring (relay/config.go): a peer that sends data
// that is not a WakuMessage loses score (p4) and, far enough below zero, is
// no longer gossiped to, published to or listened to.
func newRelay(ctx context.Context, h host.Host, topics []string, extra ...pubsub.Option) (*pubsub.PubSub, error) {
	params := pubsub.DefaultGossipSubParams()
	params.D = 6
	params.Dlo = 4
	params.Dhi = 8
	// nwaku and go-waku set Dout=3, but go-libp2p-pubsub v0.19 requires
	// Dout < D/2 (gossipsub.go validate) and refuses 3 with D=6; 2 is its
	// default and the nearest allowed value. Dout only shapes our own mesh
	// maintenance (outbound quota), not the wire.
	params.Dout = 2
	params.Dlazy = 6
	params.HeartbeatInterval = time.Second
	params.HistoryLength = 6
	params.HistoryGossip = 3
	params.PruneBackoff = time.Minute
	params.UnsubscribeBackoff = 5 * time.Second
	params.GossipFactor = 0.25
	params.FanoutTTL = time.Minute
	opts := []pubsub.Option{
		pubsub.WithGossipSubParams(params),
		pubsub.WithGossipSubProtocols([]protocol.ID{RelayProtocol}, func(f pubsub.GossipSubFeature, id protocol.ID) bool {
			// Waku relay is gossipsub v1.1: mesh and peer exchange.
			return id == RelayProtocol && (f == pubsub.GossipSubFeatureMesh || f == pubsub.GossipSubFeaturePX)
		}),
		pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign),
		pubsub.WithNoAuthor(),
		pubsub.WithMessageIdFn(messageID),
		pubsub.WithFloodPublish(true),
		pubsub.WithSeenMessagesTTL(2 * time.Minute),
		pubsub.WithPeerScore(peerScoreParams(topics), peerScoreThresholds()),
		pubsub.WithPeerOutboundQueueSize(1024),
		pubsub.WithMaxMessageSize(MaxRelayMessageSize),
	}
	return pubsub.NewGossipSub(ctx, h, append(opts, extra...)...)
}

// peerScoreParams are go-waku's (relay/config.go setDefaultPeerScoreParams
// and setDefaultTopicParams), the same topic parameters on every topic.
func peerScoreParams(topics []string) *pubsub.PeerScoreParams {
	tp := &pubsub.TopicScoreParams{
		TopicWeight:                  1,
		TimeInMeshWeight:             0.01,
		TimeInMeshQuantum:            time.Second,
		TimeInMeshCap:                10,
		FirstMessageDeliveriesWeight: 1,
		FirstMessageDeliveriesDecay:  0.5,
		FirstMessageDeliveriesCap:    10,
		// Invalid messages: -100 each, halving per decay interval.
		InvalidMessageDeliveriesWeight: -100,
		InvalidMessageDeliveriesDecay:  0.5,
	}
	ps := &pubsub.PeerScoreParams{
		Topics:                      map[string]*pubsub.TopicScoreParams{},
		AppSpecificScore:            func(peer.ID) float64 { return 0 },
		DecayInterval:               12 * time.Second,
		DecayToZero:                 0.01,
		RetainScore:                 10 * time.Minute,
		IPColocationFactorWeight:    -50,
		IPColocationFactorThreshold: 5,
		BehaviourPenaltyWeight:      -10,
		BehaviourPenaltyDecay:       0.986,
	}
	for _, t := range topics {
		ps.Topics[t] = tp
	}
	return ps
}

// peerScoreThresholds are go-waku's.
func peerScoreThresholds() *pubsub.PeerScoreThresholds {
	return &pubsub.PeerScoreThresholds{
		GossipThreshold:   -100,
		PublishThreshold:  -1000,
		GraylistThreshold: -10000,
	}
}

// messageID is the relay message id: SHA-256 of the data, raw bytes (it
// travels in IHAVE/IWANT, so it must match go-waku and nwaku).
func messageID(m *pubsubpb.Message) string {
	h := sha256.Sum256(m.Data)
	return string(h[:])
}

func (p *Peer) setScores(m map[peer.ID]float64) {
	p.scoreMu.Lock()
	p.scores = m
	p.scoreMu.Unlock()
}

// Score is the gossipsub score of a connected peer as of the last second
// (0 for a peer not scored yet).
func (p *Peer) Score(id peer.ID) float64 {
	p.scoreMu.Lock()
	defer p.scoreMu.Unlock()
	return p.scores[id]
}

// ID is the peer's libp2p peer id.
func (p *Peer) ID() peer.ID { return p.host.ID() }

// Host is the underlying libp2p host.
func (p *Peer) Host() host.Host { return p.host }

// Addrs are the peer's listen addresses with /p2p/<id>, ready to be another
// peer's static peers.
func (p *Peer) Addrs() []ma.Multiaddr {
	addrs, _ := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: p.host.ID(), Addrs: p.host.Addrs()})
	return addrs
}

// PubsubTopics are the joined pubsub topics.
func (p *Peer) PubsubTopics() []string {
	out := make([]string, 0, len(p.topics))
	for _, s := range p.cfg.Shards {
		out = append(out, wakuwire.ShardTopic(p.cfg.ClusterID, s))
	}
	return out
}

// Publish validates m and publishes it on pubsubTopic, returning its
// 14/WAKU2-MESSAGE hash. Flood publish sends it to every known peer of the
// topic, mesh or not. m must pass the relay rules other peers apply: at
// most MaxWakuMessageSize encoded, and a timestamp within
// MaxClockGapSeconds of now.
func (p *Peer) Publish(ctx context.Context, pubsubTopic string, m *wakuwire.Message) ([32]byte, error) {
	j, ok := p.topics[pubsubTopic]
	if !ok {
		return [32]byte{}, fmt.Errorf("%w: %s", ErrTopicNotJoined, pubsubTopic)
	}
	if err := m.Validate(); err != nil {
		return [32]byte{}, err
	}
	data := m.Marshal()
	if reason := checkMessage(m, len(data), time.Now()); reason != "" {
		return [32]byte{}, fmt.Errorf("wakupeer: publish on %s: %s", pubsubTopic, describeReject(reason, m, time.Now()))
	}
	if err := j.topic.Publish(ctx, data); err != nil {
		return [32]byte{}, fmt.Errorf("wakupeer: publish on %s: %w", pubsubTopic, err)
	}
	p.metrics.published(pubsubTopic)
	return wakuwire.Hash(pubsubTopic, m), nil
}

// Subscribe returns the valid messages other peers relay on pubsubTopic, a
// joined topic, until cancel is called or the peer closes (the channel is
// closed then). A reader that falls subscriberBuffer messages behind misses
// messages (counted in Metrics.Dropped) rather than stalling relay.
func (p *Peer) Subscribe(pubsubTopic string) (<-chan Received, func(), error) {
	j, ok := p.topics[pubsubTopic]
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

func (p *Peer) readTopic(name string, j *joined) {
	defer p.wg.Done()
	defer func() {
		j.subMu.Lock()
		for _, c := range j.subs {
			close(c)
		}
		j.subs = nil
		j.subMu.Unlock()
	}()
	for {
		msg, err := j.sub.Next(p.ctx)
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
		p.store.add(name, wm) // ours too; a no-op without StoreService
		if msg.ReceivedFrom == p.host.ID() {
			continue // our own publication
		}
		p.metrics.received(name)
		r := Received{PubsubTopic: name, Message: wm, Hash: wakuwire.Hash(name, wm), From: msg.ReceivedFrom}
		j.subMu.Lock()
		for _, c := range j.subs {
			select {
			case c <- r:
			default:
				p.metrics.dropped(name)
				p.log.Warn("waku relay: subscriber too slow, message dropped", "pubsub_topic", name)
			}
		}
		j.subMu.Unlock()
	}
}

// pruneStore drops the store's expired messages every storePruneInterval,
// until the peer closes.
func (p *Peer) pruneStore() {
	defer p.wg.Done()
	t := time.NewTicker(storePruneInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			p.store.pruneNow()
		case <-p.ctx.Done():
			return
		}
	}
}

// Ready is nil when at least one peer relays pubsubTopic (for /readyz).
func (p *Peer) Ready(pubsubTopic string) error {
	if _, ok := p.topics[pubsubTopic]; !ok {
		return fmt.Errorf("%w: %s", ErrTopicNotJoined, pubsubTopic)
	}
	if n := len(p.ps.ListPeers(pubsubTopic)); n == 0 {
		return fmt.Errorf("wakupeer: no relay peer on %s", pubsubTopic)
	}
	return nil
}

// TopicPeers is the number of connected peers subscribed to pubsubTopic.
func (p *Peer) TopicPeers(pubsubTopic string) int { return len(p.ps.ListPeers(pubsubTopic)) }

// MeshPeers is the number of gossipsub mesh peers on pubsubTopic.
func (p *Peer) MeshPeers(pubsubTopic string) int {
	j, ok := p.topics[pubsubTopic]
	if !ok {
		return 0
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.mesh)
}

// Close stops dialling, leaves the topics and closes the host.
func (p *Peer) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	for _, j := range p.topics {
		j.sub.Cancel()
	}
	p.wg.Wait()
	// Cancelling the context stopped gossipsub (topics go with it); closing
	// the host closes every connection and listener.
	return p.host.Close()
}

func (p *Peer) onConnected(n network.Network, c network.Conn) {
	p.metrics.setPeers(len(n.Peers()))
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		p.checkMetadata(c.RemotePeer())
	}()
}

func (p *Peer) onDisconnected(n network.Network, c network.Conn) {
	p.metrics.setPeers(len(n.Peers()))
	if kick := p.kick[c.RemotePeer()]; kick != nil {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
}

// keepConnected dials a static peer and re-dials it whenever it is
// disconnected, with exponential back-off (ReconnectMin..ReconnectMax, full
// jitter), until the peer closes.
func (p *Peer) keepConnected(ai peer.AddrInfo, kick <-chan struct{}) {
	defer p.wg.Done()
	delay := p.cfg.ReconnectMin
	var connectedAt time.Time
	sleep := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-p.ctx.Done():
			return false
		}
	}
	backoff := func() bool {
		// Jitter: sleep between delay/2 and delay.
		d := delay/2 + mrand.N(delay/2+1)
		delay = min(2*delay, p.cfg.ReconnectMax)
		return sleep(d)
	}
	for p.ctx.Err() == nil {
		if p.host.Network().Connectedness(ai.ID) == network.Connected {
			select {
			case <-kick:
			case <-time.After(5 * time.Second):
			case <-p.ctx.Done():
				return
			}
			continue
		}
		if !connectedAt.IsZero() {
			// Just lost the connection.
			stable := time.Since(connectedAt) >= stableConnection
			connectedAt = time.Time{}
			if stable {
				delay = p.cfg.ReconnectMin
			} else if !backoff() {
				return
			}
			continue
		}
		// Our back-off replaces the swarm's (5 s base, per address), which
		// would otherwise refuse our retries for a peer that was down.
		if sw, ok := p.host.Network().(*swarm.Swarm); ok {
			sw.Backoff().Clear(ai.ID)
		}
		dctx, cancel := context.WithTimeout(p.ctx, p.cfg.DialTimeout)
		err := p.host.Connect(dctx, ai)
		cancel()
		if err == nil {
			connectedAt = time.Now()
			p.log.Info("connected to static peer", "static_peer", ai.ID)
			continue
		}
		if p.ctx.Err() != nil {
			return
		}
		p.log.Debug("dialling static peer failed", "static_peer", ai.ID, "err", err, "retry_in_max", delay)
		if !backoff() {
			return
		}
	}
}

// meshTracer follows gossipsub GRAFT/PRUNE to count mesh peers per topic.
type meshTracer struct {
	p *Peer
}

func (t *meshTracer) mesh(topic string, id peer.ID, in bool) {
	j, ok := t.p.topics[topic]
	if !ok {
		return
	}
	j.mu.Lock()
	if in {
		j.mesh[id] = true
	} else {
		delete(j.mesh, id)
	}
	n := len(j.mesh)
	j.mu.Unlock()
	t.p.metrics.setMesh(topic, n)
}

func (t *meshTracer) Graft(p peer.ID, topic string) { t.mesh(topic, p, true) }
func (t *meshTracer) Prune(p peer.ID, topic string) { t.mesh(topic, p, false) }
func (t *meshTracer) RemovePeer(p peer.ID) {
	for topic := range t.p.topics {
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
		t.p.metrics.rejected(m.GetTopic(), rejectOverloaded)
	}
}
