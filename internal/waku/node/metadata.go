package node

import (
	"context"
	"fmt"

	"github.com/archivefleet/archivefleet/internal/waku/metadata"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

func (n *Node) ownMetadata() metadata.Metadata {
	c := uint32(n.cfg.ClusterID)
	m := metadata.Metadata{ClusterID: &c}
	for _, s := range n.cfg.Shards {
		m.Shards = append(m.Shards, uint32(s))
	}
	return m
}

// handleMetadata answers a metadata request, then drops the requester if it
// says it is on another cluster.
func (n *Node) handleMetadata(s network.Stream) {
	remote := s.Conn().RemotePeer()
	req, err := metadata.Serve(s, n.ownMetadata(), n.cfg.MetadataTimeout)
	if err != nil {
		n.log.Debug("waku metadata: request not answered", "peer", remote, "err", err)
		return
	}
	if req.ClusterID != nil && *req.ClusterID != uint32(n.cfg.ClusterID) {
		n.dropPeer(remote, fmt.Errorf("requested metadata from cluster %d, ours is %d", *req.ClusterID, n.cfg.ClusterID))
	}
}

// RequestMetadata asks a connected peer for its cluster id and shards.
func (n *Node) RequestMetadata(ctx context.Context, id peer.ID) (cluster *uint32, shards []uint32, err error) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.MetadataTimeout)
	defer cancel()
	m, err := metadata.Request(ctx, n.host, id, n.ownMetadata())
	if err != nil {
		return nil, nil, err
	}
	return m.ClusterID, m.Shards, nil
}

// checkMetadata runs on every new connection, as nwaku's peer manager does:
// a peer on another cluster is disconnected. Unlike nwaku, a peer that does
// not answer (or answers without a cluster id) is kept and logged: some
// clients do not serve the protocol, and relay does not need it.
func (n *Node) checkMetadata(id peer.ID) {
	cluster, shards, err := n.RequestMetadata(n.ctx, id)
	switch {
	case err != nil:
		if n.ctx.Err() == nil {
			n.log.Info("waku metadata: peer did not answer; keeping it", "peer", id, "err", err)
		}
	case cluster == nil:
		n.log.Info("waku metadata: peer sent no cluster id; keeping it", "peer", id)
	case *cluster != uint32(n.cfg.ClusterID):
		n.gater.ban(id, DefaultWrongClusterBan)
		n.metrics.droppedPeer("wrong_cluster")
		n.dropPeer(id, fmt.Errorf("peer is on cluster %d, ours is %d; refused for %v", *cluster, n.cfg.ClusterID, DefaultWrongClusterBan))
	default:
		n.log.Debug("waku metadata", "peer", id, "cluster", *cluster, "shards", shards)
	}
}

func (n *Node) dropPeer(id peer.ID, reason error) {
	n.log.Warn("waku metadata: disconnecting peer", "peer", id, "reason", reason)
	if err := n.host.Network().ClosePeer(id); err != nil {
		n.log.Debug("closing peer", "peer", id, "err", err)
	}
}
