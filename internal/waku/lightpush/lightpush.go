// Package lightpush is WAKU2-LIGHTPUSH v3: a client that asks a service
// node to relay a message (Client), and the service (Service), which relays
// what it is pushed as nwaku's does. go-waku still speaks 2.0.0-beta1, which
// this package does not. The wire types are generated (lightpushpb) from
// js-waku's light_push.proto (internal/waku/proto).
package lightpush

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/archivefleet/archivefleet/internal/waku/lightpush/lightpushpb"
	"github.com/archivefleet/archivefleet/internal/waku/relay"
	"github.com/archivefleet/archivefleet/internal/waku/rpc"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/proto"
)

// Protocol is WAKU2-LIGHTPUSH v3, the id nwaku and js-waku use
// (docs/waku-edge.md).
const Protocol = protocol.ID("/vac/waku/lightpush/3.0.0")

// Status is a lightpush v3 status code, HTTP-like. Values and names are from
// nwaku waku/waku_lightpush/common.nim (LightPushSuccessCode/
// LightPushErrorCode) and js-waku's LightPushStatusCodeV3, which agree.
// Older nwaku commits had 503 = NO_PEERS_TO_RELAY and 505 =
// SERVICE_NOT_AVAILABLE (swapped, with "TODO: check proper status code"
// notes); both are treated as retryable, so the swap does not change what a
// caller does. The waku-org/specs v3 draft still lists SUCCESS as 0 in its
// example table; nwaku and js-waku send and expect 200, and only 200 is
// success here. A refusal is a *rpc.StatusError[Status].
type Status uint32

// Lightpush v3 status codes.
const (
	Success                Status = 200
	BadRequest             Status = 400
	PayloadTooLarge        Status = 413
	InvalidMessage         Status = 420
	UnsupportedPubsubTopic Status = 421
	TooManyRequests        Status = 429
	InternalServerError    Status = 500
	ServiceNotAvailable    Status = 503
	OutOfRLNProof          Status = 504
	NoPeersToRelay         Status = 505
)

// Protocol names the protocol in a StatusError's message.
func (Status) Protocol() string { return "lightpush" }

// Retryable reports whether the same push may succeed later or through
// another service node: too many requests, internal error, service not
// available, out of RLN proofs (the node's rate for the epoch) and no peers
// to relay. 400, 413, 420 and 421 are about the request itself.
func (c Status) Retryable() bool {
	switch c {
	case TooManyRequests, InternalServerError, ServiceNotAvailable, OutOfRLNProof, NoPeersToRelay:
		return true
	}
	return false
}

const (
	// DefaultTimeout bounds a push when ctx has no earlier deadline, and a
	// request the service serves.
	DefaultTimeout = 15 * time.Second
	// MaxMessageSize caps the encoded WakuMessage: what relay carries.
	MaxMessageSize = relay.MaxWakuMessageSize
	// maxRequestSize leaves room for the request id and pubsub topic, as
	// nwaku's MaxRpcSize = MaxWakuMessageSize + 64 KiB does.
	maxRequestSize = MaxMessageSize + 64<<10
	// MaxResponseSize caps a response frame (its fields are an id, a code,
	// a description and a count).
	MaxResponseSize = 64 << 10
)

// messageField is LightPushRequestV3's message field number.
const messageField = 21

// Result is a service node's successful answer.
type Result struct {
	StatusCode Status // Success
	Desc       string // status_desc, if sent
	RelayPeers uint32 // relay_peer_count, if sent: peers the node relayed to
}

// ErrResponse wraps a response that could not be read as a valid answer to
// the request (undecodable, too large, wrong request id, no status).
var ErrResponse = errors.New("waku: bad lightpush response")

// The wire types are lightpushpb's LightPushRequestV3 (request_id=1,
// pubsub_topic=20 optional, message=21) and LightPushResponseV3
// (request_id=1, status_code=10, status_desc=11 optional,
// relay_peer_count=12 optional), the field numbers nwaku's
// waku_lightpush/rpc_codec.nim uses (it requires request_id). Optional
// fields are set only when they hold something, so the bytes are nwaku's.

// toProto is m as lightpushpb's WakuMessage, sharing its byte slices, with
// the zero fields unset as wakuwire's encoder leaves them out: it encodes to
// the same bytes.
func toProto(m *wakuwire.Message) *lightpushpb.WakuMessage {
	w := &lightpushpb.WakuMessage{Payload: m.Payload, ContentTopic: m.ContentTopic}
	if m.Version != 0 {
		w.Version = proto.Uint32(m.Version)
	}
	if m.Timestamp != 0 {
		w.Timestamp = proto.Int64(m.Timestamp)
	}
	if len(m.Meta) > 0 {
		w.Meta = m.Meta
	}
	if m.Ephemeral {
		w.Ephemeral = proto.Bool(true)
	}
	return w
}

// Client pushes messages to lightpush service nodes from Host.
type Client struct {
	Host host.Host
}

// Push asks the service node to relay m on pubsubTopic (empty: the node
// derives it from the content topic, autosharding) over lightpush v3: one
// uvarint length-prefixed request and one response on a fresh stream. If
// service has addresses they are added to the peerstore and the peer is
// dialled; with none, an existing connection or known addresses are used.
// A non-200 status is a *rpc.StatusError[Status] (a refusal of a request
// the node did not read, answered with request id "N/A" as nwaku does when
// rate limiting, included); an unreadable or mismatched response wraps
// ErrResponse; transport failures are returned as is.
func (c Client) Push(ctx context.Context, service peer.AddrInfo, pubsubTopic string, m *wakuwire.Message) (Result, error) {
	if err := m.Validate(); err != nil {
		return Result{}, err
	}
	msg := toProto(m)
	if n := proto.Size(msg); n > MaxMessageSize {
		return Result{}, fmt.Errorf("waku lightpush: message is %d bytes, limit %d", n, MaxMessageSize)
	}
	id, err := rpc.NewRequestID()
	if err != nil {
		return Result{}, err
	}
	req := &lightpushpb.LightPushRequestV3{RequestId: id, Message: msg}
	if pubsubTopic != "" {
		req.PubsubTopic = proto.String(pubsubTopic)
	}
	wire, err := proto.Marshal(req)
	if err != nil {
		return Result{}, err
	}
	if len(wire) > maxRequestSize {
		return Result{}, fmt.Errorf("waku lightpush: request is %d bytes, limit %d", len(wire), maxRequestSize)
	}

	ctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
	defer cancel()
	if len(service.Addrs) > 0 {
		if err := c.Host.Connect(ctx, service); err != nil {
			return Result{}, fmt.Errorf("waku lightpush: connecting to %s: %w", service.ID, err)
		}
	}
	s, err := c.Host.NewStream(ctx, service.ID, Protocol)
	if err != nil {
		return Result{}, fmt.Errorf("waku lightpush: opening stream to %s: %w", service.ID, err)
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	// The deadline does not cover a ctx cancelled early; reset then.
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()

	if err := rpc.WriteFrame(s, wire); err != nil {
		_ = s.Reset()
		return Result{}, fmt.Errorf("waku lightpush: writing request: %w", rpc.ContextError(ctx, err))
	}
	_ = s.CloseWrite()
	b, err := rpc.ReadFrame(bufio.NewReader(s), MaxResponseSize)
	if err != nil {
		_ = s.Reset()
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			return Result{}, fmt.Errorf("%w: stream ended: %w", ErrResponse, err)
		case errors.Is(err, rpc.ErrFrameTooLarge):
			return Result{}, fmt.Errorf("%w: %w", ErrResponse, err)
		}
		return Result{}, fmt.Errorf("waku lightpush: reading response: %w", rpc.ContextError(ctx, err))
	}
	var resp lightpushpb.LightPushResponseV3
	if err := rpc.Unmarshal(b, &resp); err != nil {
		return Result{}, fmt.Errorf("%w: %w", ErrResponse, err)
	}
	// status_code has no presence on the wire: 0 is no status, which no
	// version of the protocol sends.
	code := Status(resp.StatusCode)
	if code == 0 {
		return Result{}, fmt.Errorf("%w: no status code", ErrResponse)
	}
	// A refusal of a request the node did not read carries no id of ours.
	unread := resp.RequestId == rpc.UnknownRequestID && code != Success
	if resp.RequestId != id && !unread {
		return Result{}, fmt.Errorf("%w: request id %q, sent %q", ErrResponse, resp.RequestId, id)
	}
	if code != Success {
		return Result{}, &rpc.StatusError[Status]{Code: code, Desc: resp.GetStatusDesc()}
	}
	return Result{StatusCode: code, Desc: resp.GetStatusDesc(), RelayPeers: resp.GetRelayPeerCount()}, nil
}
