package wakupeer

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/encoding/protowire"
)

// MetadataProtocol is 66/WAKU2-METADATA.
const MetadataProtocol = protocol.ID("/vac/waku/metadata/1.0.0")

// maxMetadataSize caps a metadata message (nwaku RpcResponseMaxBytes).
const maxMetadataSize = 1024

// metadata is WakuMetadataRequest and WakuMetadataResponse (same layout):
// cluster_id=1 (optional uint32), shards=2 (repeated uint32, deprecated,
// unpacked) and shards=3 (packed). It is encoded as nwaku does — field 2 one
// varint per shard, then field 3 packed — so both old readers (js-waku's
// @waku/proto reads field 2 one varint at a time, go-waku before 0.28) and
// new ones find the shards. Decoding accepts either field in either form and
// prefers field 3.
type metadata struct {
	ClusterID *uint32
	Shards    []uint32
}

func (m metadata) marshal() []byte {
	var b []byte
	if m.ClusterID != nil {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(*m.ClusterID))
	}
	for _, s := range m.Shards {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(s))
	}
	if len(m.Shards) > 0 {
		var packed []byte
		for _, s := range m.Shards {
			packed = protowire.AppendVarint(packed, uint64(s))
		}
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendBytes(b, packed)
	}
	return b
}

func (m *metadata) unmarshal(b []byte) error {
	*m = metadata{}
	var old, cur []uint32
	var sawCur bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if (num == 2 || num == 3) && (typ == protowire.VarintType || typ == protowire.BytesType) {
			dst := &old
			if num == 3 {
				dst, sawCur = &cur, true
			}
			if typ == protowire.VarintType {
				v, n := protowire.ConsumeVarint(b)
				if n < 0 {
					return protowire.ParseError(n)
				}
				b = b[n:]
				*dst = append(*dst, uint32(v))
				continue
			}
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			for len(v) > 0 {
				x, n := protowire.ConsumeVarint(v)
				if n < 0 {
					return protowire.ParseError(n)
				}
				v = v[n:]
				*dst = append(*dst, uint32(x))
			}
			continue
		}
		if num == 1 && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			c := uint32(v)
			m.ClusterID = &c
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	m.Shards = old
	if sawCur {
		m.Shards = cur
	}
	return nil
}

// writeDelimited writes a uvarint length prefix and b (go-msgio varint
// framing, as pbio.NewDelimitedWriter and it-length-prefixed do).
func writeDelimited(w io.Writer, b []byte) error {
	buf := binary.AppendUvarint(make([]byte, 0, len(b)+binary.MaxVarintLen64), uint64(len(b)))
	_, err := w.Write(append(buf, b...))
	return err
}

func readDelimited(r *bufio.Reader) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	if n > maxMetadataSize {
		return nil, fmt.Errorf("metadata message of %d bytes, limit %d", n, maxMetadataSize)
	}
	b := make([]byte, n)
	_, err = io.ReadFull(r, b)
	return b, err
}

func (p *Peer) ownMetadata() metadata {
	c := uint32(p.cfg.ClusterID)
	m := metadata{ClusterID: &c}
	for _, s := range p.cfg.Shards {
		m.Shards = append(m.Shards, uint32(s))
	}
	return m
}

// handleMetadata answers a metadata request, then drops the requester if it
// says it is on another cluster.
func (p *Peer) handleMetadata(s network.Stream) {
	defer s.Close()
	remote := s.Conn().RemotePeer()
	_ = s.SetDeadline(time.Now().Add(p.cfg.MetadataTimeout))
	b, err := readDelimited(bufio.NewReader(s))
	var req metadata
	if err == nil {
		err = req.unmarshal(b)
	}
	if err != nil {
		p.log.Debug("waku metadata: bad request", "peer", remote, "err", err)
		_ = s.Reset()
		return
	}
	if err := writeDelimited(s, p.ownMetadata().marshal()); err != nil {
		p.log.Debug("waku metadata: writing response", "peer", remote, "err", err)
		_ = s.Reset()
		return
	}
	if req.ClusterID != nil && *req.ClusterID != uint32(p.cfg.ClusterID) {
		p.dropPeer(remote, fmt.Errorf("requested metadata from cluster %d, ours is %d", *req.ClusterID, p.cfg.ClusterID))
	}
}

// RequestMetadata asks a connected peer for its cluster id and shards.
func (p *Peer) RequestMetadata(ctx context.Context, id peer.ID) (cluster *uint32, shards []uint32, err error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.MetadataTimeout)
	defer cancel()
	s, err := p.host.NewStream(network.WithAllowLimitedConn(ctx, "metadata"), id, MetadataProtocol)
	if err != nil {
		return nil, nil, err
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	if err := writeDelimited(s, p.ownMetadata().marshal()); err != nil {
		_ = s.Reset()
		return nil, nil, err
	}
	_ = s.CloseWrite()
	b, err := readDelimited(bufio.NewReader(s))
	if err != nil {
		_ = s.Reset()
		return nil, nil, err
	}
	var resp metadata
	if err := resp.unmarshal(b); err != nil {
		return nil, nil, err
	}
	return resp.ClusterID, resp.Shards, nil
}

// checkMetadata runs on every new connection, as nwaku's peer manager does:
// a peer on another cluster is disconnected. Unlike nwaku, a peer that does
// not answer (or answers without a cluster id) is kept and logged: some
// clients do not serve the protocol, and relay does not need it.
func (p *Peer) checkMetadata(id peer.ID) {
	cluster, shards, err := p.RequestMetadata(p.ctx, id)
	switch {
	case err != nil:
		if p.ctx.Err() == nil {
			p.log.Info("waku metadata: peer did not answer; keeping it", "peer", id, "err", err)
		}
	case cluster == nil:
		p.log.Info("waku metadata: peer sent no cluster id; keeping it", "peer", id)
	case *cluster != uint32(p.cfg.ClusterID):
		p.gater.ban(id, DefaultWrongClusterBan)
		p.metrics.droppedPeer("wrong_cluster")
		p.dropPeer(id, fmt.Errorf("peer is on cluster %d, ours is %d; refused for %v", *cluster, p.cfg.ClusterID, DefaultWrongClusterBan))
	default:
		p.log.Debug("waku metadata", "peer", id, "cluster", *cluster, "shards", shards)
	}
}

func (p *Peer) dropPeer(id peer.ID, reason error) {
	p.log.Warn("waku metadata: disconnecting peer", "peer", id, "reason", reason)
	if err := p.host.Network().ClosePeer(id); err != nil {
		p.log.Debug("closing peer", "peer", id, "err", err)
	}
}
