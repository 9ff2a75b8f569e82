package node

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// DefaultWrongClusterBan is how long a peer found on another cluster is
// refused. Without it a peer that keeps a minimum connection count (js-waku
// redials within milliseconds) would be connected and dropped in a loop.
const DefaultWrongClusterBan = 10 * time.Minute

// admittedTTL bounds how long an inbound peer admitted at the handshake
// holds its place while its connection is set up (stream multiplexer
// negotiation); one that never completes stops counting after it.
const admittedTTL = 15 * time.Second

// gater refuses, in both directions, peers banned until a time, and
// inbound connections from new peers once MaxPeers peers are connected:
// the connection manager only trims after a minute's grace, so without
// this any number of peers could connect meanwhile (each costs its
// connection's buffers and a gossipsub peer). Static peers and peers
// already connected are let in at the cap; our own dials are not capped
// here (the connection manager trims them).
type gater struct {
	mu     sync.Mutex
	banned map[peer.ID]time.Time
	now    func() time.Time

	// Set once the host exists (limit); before that nothing is capped.
	net      network.Network
	maxPeers int
	static   map[peer.ID]bool
	metrics  *Metrics
	// admitted are inbound peers let in at the handshake and not yet
	// connected, each until a time: they count against maxPeers, so
	// that handshakes finishing together cannot all pass the cap.
	admitted map[peer.ID]time.Time
}

func newGater() *gater {
	return &gater{banned: map[peer.ID]time.Time{}, now: time.Now, admitted: map[peer.ID]time.Time{}}
}

// limit starts capping inbound peers at maxPeers on n, static exempt; the
// gater follows n's connections from now on.
func (g *gater) limit(n network.Network, maxPeers int, static []peer.AddrInfo, m *Metrics) {
	g.mu.Lock()
	g.net, g.maxPeers, g.metrics = n, maxPeers, m
	g.static = map[peer.ID]bool{}
	for _, ai := range static {
		g.static[ai.ID] = true
	}
	g.mu.Unlock()
	n.Notify(&network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		// Counted by n.Peers() from now on.
		g.mu.Lock()
		delete(g.admitted, c.RemotePeer())
		g.mu.Unlock()
	}})
}

func (g *gater) ban(id peer.ID, d time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.banned[id] = g.now().Add(d)
}

func (g *gater) allowed(id peer.ID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.allowedLocked(id)
}

func (g *gater) allowedLocked(id peer.ID) bool {
	until, ok := g.banned[id]
	if ok && !g.now().Before(until) {
		delete(g.banned, id)
		return true
	}
	return !ok
}

// admit decides on an inbound peer whose id the handshake just proved;
// g.mu is held. Its cost is bounded by maxPeers: the admitted are at most
// that many.
func (g *gater) admit(id peer.ID) bool {
	if !g.allowedLocked(id) {
		g.metrics.refusedPeer("banned")
		return false
	}
	if g.net == nil || g.static[id] || g.net.Connectedness(id) == network.Connected {
		return true
	}
	now := g.now()
	if until, ok := g.admitted[id]; ok && now.Before(until) {
		return true // a second connection racing the first
	}
	for a, until := range g.admitted {
		if !now.Before(until) || g.net.Connectedness(a) == network.Connected {
			delete(g.admitted, a)
		}
	}
	if len(g.net.Peers())+len(g.admitted) >= g.maxPeers {
		g.metrics.refusedPeer("max_peers")
		return false
	}
	g.admitted[id] = now.Add(admittedTTL)
	return true
}

func (g *gater) InterceptPeerDial(id peer.ID) bool                 { return g.allowed(id) }
func (g *gater) InterceptAddrDial(id peer.ID, _ ma.Multiaddr) bool { return g.allowed(id) }
func (g *gater) InterceptAccept(network.ConnMultiaddrs) bool       { return true }
func (g *gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) {
	return true, 0
}

// InterceptSecured is the first point an inbound peer's id is known.
func (g *gater) InterceptSecured(dir network.Direction, id peer.ID, _ network.ConnMultiaddrs) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if dir != network.DirInbound {
		return g.allowedLocked(id)
	}
	return g.admit(id)
}
