// Package metadata is 66/WAKU2-METADATA: on a new connection each side may
// ask the other for its cluster id and shards, one request and one
// response on a fresh stream. What to do with a peer of another cluster is
// the node's business (internal/waku/node).
package metadata

import (
	"bufio"
	"context"
	"fmt"
	"time"

	"github.com/archivefleet/archivefleet/internal/waku/metadata/metadatapb"
	"github.com/archivefleet/archivefleet/internal/waku/rpc"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/proto"
)

// Protocol is 66/WAKU2-METADATA.
const Protocol = protocol.ID("/vac/waku/metadata/1.0.0")

// maxSize caps a metadata message (nwaku RpcResponseMaxBytes).
const maxSize = 1024

// Metadata is what a node says of itself: its cluster (nil when it did not
// say) and the shards it relays.
type Metadata struct {
	ClusterID *uint32
	Shards    []uint32
}

// The shards go in both fields, as nwaku writes them: field 2 one varint
// per shard (deprecated, unpacked), then field 3 packed, so that old
// readers (js-waku's @waku/proto reads field 2 one varint at a time,
// go-waku before 0.28) and new ones find them.

func (m Metadata) request() *metadatapb.WakuMetadataRequest {
	return &metadatapb.WakuMetadataRequest{ClusterId: m.ClusterID, Shards: m.Shards, ShardsDeprecated: m.Shards}
}

func (m Metadata) response() *metadatapb.WakuMetadataResponse {
	return &metadatapb.WakuMetadataResponse{ClusterId: m.ClusterID, Shards: m.Shards, ShardsDeprecated: m.Shards}
}

// Decoding is lenient, as nwaku's and js-waku's: a field of an unexpected
// wire type is skipped. Either shards field may come packed or not; field 3
// is taken unless it is empty, as nwaku (0.26 on) does.

func decodeRequest(b []byte) (Metadata, error) {
	var w metadatapb.WakuMetadataRequest
	if err := proto.Unmarshal(b, &w); err != nil {
		return Metadata{}, err
	}
	return fromWire(w.ClusterId, w.Shards, w.ShardsDeprecated), nil
}

func decodeResponse(b []byte) (Metadata, error) {
	var w metadatapb.WakuMetadataResponse
	if err := proto.Unmarshal(b, &w); err != nil {
		return Metadata{}, err
	}
	return fromWire(w.ClusterId, w.Shards, w.ShardsDeprecated), nil
}

func fromWire(cluster *uint32, shards, deprecated []uint32) Metadata {
	if len(shards) == 0 {
		shards = deprecated
	}
	return Metadata{ClusterID: cluster, Shards: shards}
}

// Serve answers the request on s with own and returns what the requester
// said of itself. It reads for at most timeout; on an error the stream is
// reset.
func Serve(s network.Stream, own Metadata, timeout time.Duration) (Metadata, error) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(timeout))
	b, err := rpc.ReadFrame(bufio.NewReader(s), maxSize)
	var req Metadata
	if err == nil {
		req, err = decodeRequest(b)
	}
	if err != nil {
		_ = s.Reset()
		return Metadata{}, fmt.Errorf("bad request: %w", err)
	}
	resp, err := proto.Marshal(own.response())
	if err == nil {
		err = rpc.WriteFrame(s, resp)
	}
	if err != nil {
		_ = s.Reset()
		return Metadata{}, fmt.Errorf("writing response: %w", err)
	}
	return req, nil
}

// Request asks the connected peer id for its metadata, telling it own.
// ctx bounds the exchange.
func Request(ctx context.Context, h host.Host, id peer.ID, own Metadata) (Metadata, error) {
	req, err := proto.Marshal(own.request())
	if err != nil {
		return Metadata{}, err
	}
	s, err := h.NewStream(network.WithAllowLimitedConn(ctx, "metadata"), id, Protocol)
	if err != nil {
		return Metadata{}, err
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	if err := rpc.WriteFrame(s, req); err != nil {
		_ = s.Reset()
		return Metadata{}, err
	}
	_ = s.CloseWrite()
	b, err := rpc.ReadFrame(bufio.NewReader(s), maxSize)
	if err != nil {
		_ = s.Reset()
		return Metadata{}, err
	}
	return decodeResponse(b)
}
