package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/messages"
	"github.com/archivefleet/archivefleet/internal/observe"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/waku/node"
	"github.com/archivefleet/archivefleet/internal/wakuedge"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
)

// RunWaku runs the Waku edge service: a Waku relay peer and the worker that
// publishes each announcement on the community's shard. /readyz fails until
// every relayed shard has MIN_PEERS relay peers.
func RunWaku(ctx context.Context, cfg WakuConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	return runService(ctx, cfg.Common, "waku", func(b *bus.Bus, log *slog.Logger, reg prometheus.Registerer) (*service, error) {
		st := &messages.Store{Bus: b, Logger: log, Communities: registry.New(b.Communities), Metrics: messages.NewMetrics(reg)}
		edge, peer, err := newWakuEdge(ctx, b, cfg.Waku, cfg.KeyFile, st, log, reg)
		if err != nil {
			return nil, err
		}
		run := func(ctx context.Context) error {
			defer peer.Close()
			return edge.Run(ctx)
		}
		return &service{run: run, checks: map[string]observe.Check{"waku": wakuReady(peer, cfg.MinPeers)}}, nil
	})
}

// wakuReady is nil when every relayed shard has at least minPeers peers.
func wakuReady(p *node.Node, minPeers int) observe.Check {
	return func(context.Context) error {
		var errs []error
		for _, t := range p.PubsubTopics() {
			if n := p.TopicPeers(t); n < minPeers {
				errs = append(errs, fmt.Errorf("%d relay peers on %s, need %d", n, t, minPeers))
			}
		}
		return errors.Join(errs...)
	}
}

// newWakuEdge starts the relay peer (its node key in keyFile, created on
// first start) and builds the edge; with WAKU_RECEIVE it archives what it
// hears through ingest. The rfc26 payloads are signed with the same node
// key: one key to keep, and members only recover it.
func newWakuEdge(ctx context.Context, b *bus.Bus, w Waku, keyFile string, ingest wakuedge.Ingester, log *slog.Logger, reg prometheus.Registerer) (*wakuedge.Service, *node.Node, error) {
	shards, err := w.ShardList()
	if err != nil {
		return nil, nil, err
	}
	shardKeys, err := w.ShardKeyMap()
	if err != nil {
		return nil, nil, err
	}
	pushNodes, err := w.LightPushPeers()
	if err != nil {
		return nil, nil, err
	}
	storeNodes, err := w.StorePeers()
	if err != nil {
		return nil, nil, err
	}
	nodeKey, err := node.LoadOrCreateKey(keyFile)
	if err != nil {
		return nil, nil, err
	}
	raw, err := nodeKey.Raw()
	if err != nil {
		return nil, nil, err
	}
	peer, err := node.New(ctx, node.Config{ListenAddrs: splitList(w.Listen), AnnounceAddrs: splitList(w.Announce), KeyFile: keyFile,
		StaticPeers: splitList(w.StaticPeers), DNSDiscovery: splitList(w.DNSDiscovery), ClusterID: w.Cluster, Shards: shards, MaxPeers: w.MaxPeers, LightPushService: w.LightPushServe, StoreService: w.StoreServe,
		StoreRetention: w.StoreRetention, StoreCapacity: w.StoreCapacity, StoreMaxBytes: int64(w.StoreMaxBytes),
		Registerer: reg, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	var topics []string
	for _, s := range shards {
		topics = append(topics, wakuwire.ShardTopic(w.Cluster, s))
	}
	svc := wakuedge.Service{Bus: b, Registry: registry.New(b.Communities), State: &state.Store{KV: b.State}, Peer: peer,
		Logger: log, Config: wakuedge.Config{InstallationID: w.InstallationID, MinPeers: w.MinPeers, ClusterID: w.Cluster, Topics: topics,
			Signer: secp256k1.PrivKeyFromBytes(raw), LightPushNodes: pushNodes, ShardKeys: shardKeys}}
	if w.Receive {
		svc.Listen, svc.Ingest = peer, ingest
		svc.StoreClient, svc.Config.StoreNodes, svc.Config.BackfillWindow = peer, storeNodes, w.BackfillWindow
	}
	edge, err := wakuedge.New(svc, reg)
	if err != nil {
		peer.Close()
		return nil, nil, err
	}
	return edge, peer, nil
}
