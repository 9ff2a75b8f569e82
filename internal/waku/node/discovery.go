package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/archivefleet/archivefleet/internal/waku/dnsdisc"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Discovery timings.
const (
	// discoveryCheck is how often the peer looks at its topic peer counts
	// and dials discovered nodes when short.
	discoveryCheck = 10 * time.Second
	// discoveryWant is the relay peers per topic the peer dials up to: the
	// gossipsub mesh degree D.
	discoveryWant = 6
)

// discover keeps the peer supplied from the DNS discovery trees: it syncs
// them at start and every DiscoveryInterval (sooner, with back-off, while
// they yield nothing), and whenever a joined topic has fewer than
// discoveryWant peers it dials discovered relay nodes that serve a shard of
// ours in our cluster.
func (n *Node) discover() {
	defer n.wg.Done()
	var candidates []peer.AddrInfo
	var synced time.Time
	retry := n.cfg.ReconnectMin
	for n.ctx.Err() == nil {
		wait := discoveryCheck
		if candidates == nil || time.Since(synced) >= n.cfg.DiscoveryInterval {
			found, err := n.syncTrees()
			if err != nil {
				n.log.Warn("DNS discovery failed; keeping the nodes found before", "err", err, "retry_in", retry, "known", len(candidates))
				wait = retry
				retry = min(2*retry, n.cfg.ReconnectMax)
			} else {
				candidates, synced, retry = found, time.Now(), n.cfg.ReconnectMin
				n.log.Info("DNS discovery", "relay_nodes_for_our_shards", len(found), "next_sync", n.cfg.DiscoveryInterval)
			}
		}
		n.dialCandidates(candidates)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-n.ctx.Done():
			t.Stop()
			return
		}
	}
}

// syncTrees returns the relay nodes of every tree that serve one of our
// shards in our cluster. One failing tree does not hide the others.
func (n *Node) syncTrees() ([]peer.AddrInfo, error) {
	var out []peer.AddrInfo
	var errs []error
	seen := map[peer.ID]bool{n.host.ID(): true}
	for _, url := range n.cfg.DNSDiscovery {
		ctx, cancel := context.WithTimeout(n.ctx, time.Minute)
		nodes, err := dnsdisc.DiscoverENRTree(ctx, url, n.cfg.Resolver)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", url, err))
			continue
		}
		for _, d := range nodes {
			if !d.Relay || seen[d.ID] || !slices.ContainsFunc(n.cfg.Shards, func(s uint16) bool { return d.HasShard(n.cfg.ClusterID, s) }) {
				continue
			}
			seen[d.ID] = true
			out = append(out, d.AddrInfo())
		}
	}
	if len(out) == 0 {
		errs = append(errs, fmt.Errorf("no relay node for cluster %d shards %v", n.cfg.ClusterID, n.cfg.Shards))
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// dialCandidates dials discovered nodes not connected, in order, while some
// joined topic is short of peers.
func (n *Node) dialCandidates(candidates []peer.AddrInfo) {
	for _, ai := range candidates {
		if !n.shortOfPeers() || n.ctx.Err() != nil {
			return
		}
		if n.host.Network().Connectedness(ai.ID) == network.Connected || !n.gater.allowed(ai.ID) {
			continue
		}
		ctx, cancel := context.WithTimeout(n.ctx, n.cfg.DialTimeout)
		err := n.host.Connect(ctx, ai)
		cancel()
		if err != nil {
			n.log.Debug("dialling discovered node failed", "node", ai.ID, "err", err)
			continue
		}
		n.log.Info("connected to discovered node", "node", ai.ID)
		// Let gossipsub exchange subscriptions before counting again.
		t := time.NewTimer(500 * time.Millisecond)
		select {
		case <-t.C:
		case <-n.ctx.Done():
			t.Stop()
			return
		}
	}
}

func (n *Node) shortOfPeers() bool {
	for name := range n.topics {
		if n.TopicPeers(name) < discoveryWant {
			return true
		}
	}
	return false
}
