package wakupeer

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

// gater refuses, in both directions, peers banned until a time.
type gater struct {
	mu     sync.Mutex
	banned map[peer.ID]time.Time
	now    func() time.Time
}

func newGater() *gater { return &gater{banned: map[peer.ID]time.Time{}, now: time.Now} }

func (g *gater) ban(id peer.ID, d time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.banned[id] = g.now().Add(d)
}

func (g *gater) allowed(id peer.ID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	until, ok := g.banned[id]
	if ok && !g.now().Before(until) {
		delete(g.banned, id)
		return true
	}
	return !ok
}

func (g *gater) InterceptPeerDial(id peer.ID) bool                 { return g.allowed(id) }
func (g *gater) InterceptAddrDial(id peer.ID, _ ma.Multiaddr) bool { return g.allowed(id) }
func (g *gater) InterceptAccept(network.ConnMultiaddrs) bool       { return true }
func (g *gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) {
	return true, 0
}

// InterceptSecured is the first point an inbound peer's id is known.
func (g *gater) InterceptSecured(_ network.Direction, id peer.ID, _ network.ConnMultiaddrs) bool {
	return g.allowed(id)
}
