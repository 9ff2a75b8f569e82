package wakupeer

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

// Discovery defaults.
const (
	// DefaultDiscoveryInterval is how often the ENR trees are synced again.
	DefaultDiscoveryInterval = 30 * time.Minute
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
func (p *Peer) discover() {
	defer p.wg.Done()
	var candidates []peer.AddrInfo
	var synced time.Time
	retry := p.cfg.ReconnectMin
	for p.ctx.Err() == nil {
		wait := discoveryCheck
		if candidates == nil || time.Since(synced) >= p.cfg.DiscoveryInterval {
			found, err := p.syncTrees()
			if err != nil {
				p.log.Warn("DNS discovery failed; keeping the nodes found before", "err", err, "retry_in", retry, "known", len(candidates))
				wait = retry
				retry = min(2*retry, p.cfg.ReconnectMax)
			} else {
				candidates, synced, retry = found, time.Now(), p.cfg.ReconnectMin
				p.log.Info("DNS discovery", "relay_nodes_for_our_shards", len(found), "next_sync", p.cfg.DiscoveryInterval)
			}
		}
		p.dialCandidates(candidates)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-p.ctx.Done():
			t.Stop()
			return
		}
	}
}

// syncTrees returns the relay nodes of every tree that serve one of our
// shards in our cluster. One failing tree does not hide the others.
func (p *Peer) syncTrees() ([]peer.AddrInfo, error) {
	var out []peer.AddrInfo
	var errs []error
	seen := map[peer.ID]bool{p.host.ID(): true}
	for _, url := range p.cfg.DNSDiscovery {
		ctx, cancel := context.WithTimeout(p.ctx, time.Minute)
		nodes, err := dnsdisc.DiscoverENRTree(ctx, url, p.cfg.Resolver)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", url, err))
			continue
		}
		for _, n := range nodes {
			if !n.Relay || seen[n.ID] || !slices.ContainsFunc(p.cfg.Shards, func(s uint16) bool { return n.HasShard(p.cfg.ClusterID, s) }) {
				continue
			}
			seen[n.ID] = true
			out = append(out, n.AddrInfo())
		}
	}
	if len(out) == 0 {
		errs = append(errs, fmt.Errorf("no relay node for cluster %d shards %v", p.cfg.ClusterID, p.cfg.Shards))
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// dialCandidates dials discovered nodes not connected, in order, while some
// joined topic is short of peers.
func (p *Peer) dialCandidates(candidates []peer.AddrInfo) {
	for _, ai := range candidates {
		if !p.shortOfPeers() || p.ctx.Err() != nil {
			return
		}
		if p.host.Network().Connectedness(ai.ID) == network.Connected || !p.gater.allowed(ai.ID) {
			continue
		}
		ctx, cancel := context.WithTimeout(p.ctx, p.cfg.DialTimeout)
		err := p.host.Connect(ctx, ai)
		cancel()
		if err != nil {
			p.log.Debug("dialling discovered node failed", "node", ai.ID, "err", err)
			continue
		}
		p.log.Info("connected to discovered node", "node", ai.ID)
		// Let gossipsub exchange subscriptions before counting again.
		t := time.NewTimer(500 * time.Millisecond)
		select {
		case <-t.C:
		case <-p.ctx.Done():
			t.Stop()
			return
		}
	}
}

func (p *Peer) shortOfPeers() bool {
	for name := range p.topics {
		if p.TopicPeers(name) < discoveryWant {
			return true
		}
	}
	return false
}
