package node

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/testenv"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// bareHost is a libp2p host speaking nothing but the transport.
func bareHost(t *testing.T) host.Host { return testenv.Libp2pHost(t, false) }

// dialAll dials p from every host at once and returns, once every dial has
// ended, how many succeeded. A dial p refuses may succeed on the dialer's
// side (noise carries the multiplexer choice, so the dialer is done before
// p decides) and is closed right after.
func dialAll(t *testing.T, p *Node, hosts []host.Host) int {
	t.Helper()
	ai := peer.AddrInfo{ID: p.ID(), Addrs: p.Host().Addrs()}
	var ok atomic.Int32
	var wg sync.WaitGroup
	for _, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			if h.Connect(ctx, ai) == nil {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(ok.Load())
}

// TestInboundPeerCap: 20 peers dial a peer with MaxPeers 5 at once; 5 are
// let in and the rest refused at the handshake, counted; a static peer is
// let in at the cap (and counts towards it).
func TestInboundPeerCap(t *testing.T) {
	t.Parallel()
	const maxPeers, dialers = 5, 20
	static := bareHost(t)
	// Its address is wrong, so only its own dial can connect it.
	p := startPeer(t, Config{MaxPeers: maxPeers, Registerer: prometheus.NewRegistry(),
		StaticPeers: []string{"/ip4/127.0.0.1/tcp/1/p2p/" + static.ID().String()}})
	var hosts []host.Host
	for range dialers {
		hosts = append(hosts, bareHost(t))
	}
	dialAll(t, p, hosts)
	refused := func() int { return int(testutil.ToFloat64(p.metrics.PeersRefused.WithLabelValues("max_peers"))) }
	testenv.Eventually(t, 10*time.Second, func() bool {
		return len(p.Host().Network().Peers())+refused() == dialers
	}, "every connection decided")

	if n := len(p.Host().Network().Peers()); n != maxPeers || refused() != dialers-maxPeers {
		t.Fatalf("%d connected, %d refused; want %d and %d", n, refused(), maxPeers, dialers-maxPeers)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		n := 0
		for _, h := range hosts {
			if len(h.Network().ConnsToPeer(p.ID())) > 0 {
				n++
			}
		}
		return n == maxPeers
	}, "the refused dialers disconnected")

	dialAll(t, p, []host.Host{static})
	if n := len(p.Host().Network().Peers()); n != maxPeers+1 || refused() != dialers-maxPeers {
		t.Fatalf("static peer at the cap: %d connected, %d refused", n, refused())
	}
	// Static peers count: two leaving (6 -> 4) make room for one more.
	left := 0
	for _, h := range hosts {
		if left < 2 && len(h.Network().ConnsToPeer(p.ID())) > 0 {
			h.Close()
			left++
		}
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return len(p.Host().Network().Peers()) == maxPeers-1 }, "two peers gone")
	dialAll(t, p, []host.Host{bareHost(t), bareHost(t)})
	testenv.Eventually(t, 10*time.Second, func() bool { return refused() == dialers-maxPeers+1 }, "both new peers decided")
	if n := len(p.Host().Network().Peers()); n != maxPeers {
		t.Fatalf("%d connected after two left and two came, want %d", n, maxPeers)
	}
}
