package wakupeer

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/archivefleet/archivefleet/internal/wakuwire"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/encoding/protowire"
)

// LightPushProtocol is WAKU2-LIGHTPUSH v3 (waku-org/specs
// standards/core/lightpush.md; nwaku waku_core/codecs.nim, js-waku
// LightPushCodecV3). go-waku still speaks 2.0.0-beta1, which this client
// does not (spec waku-edge.md §3).
const LightPushProtocol = protocol.ID("/vac/waku/lightpush/3.0.0")

// Lightpush v3 status codes, HTTP-like. Values and names are from nwaku
// waku/waku_lightpush/common.nim (LightPushSuccessCode/LightPushErrorCode)
// and js-waku's LightPushStatusCodeV3, which agree. Older nwaku commits had
// 503 = NO_PEERS_TO_RELAY and 505 = SERVICE_NOT_AVAILABLE (swapped, with
// "TODO: check proper status code" notes); both are treated as retryable, so
// the swap does not change what a caller does. The waku-org/specs v3 draft
// still lists SUCCESS as 0 in its example table; nwaku and js-waku send and
// expect 200, and only 200 is success here.
const (
	LightPushSuccess                = 200
	LightPushBadRequest             = 400
	LightPushPayloadTooLarge        = 413
	LightPushInvalidMessage         = 420
	LightPushUnsupportedPubsubTopic = 421
	LightPushTooManyRequests        = 429
	LightPushInternalServerError    = 500
	LightPushServiceNotAvailable    = 503
	LightPushOutOfRLNProof          = 504
	LightPushNoPeersToRelay         = 505
)

const (
	// DefaultLightPushTimeout bounds a push when ctx has no earlier deadline.
	DefaultLightPushTimeout = 15 * time.Second
	// MaxLightPushMessageSize caps the encoded WakuMessage: what relay
	// carries.
	MaxLightPushMessageSize = MaxWakuMessageSize
	// maxLightPushRequest leaves room for the request id and pubsub topic,
	// as nwaku's MaxRpcSize = MaxWakuMessageSize + 64 KiB does.
	maxLightPushRequest = MaxLightPushMessageSize + 64<<10
	// maxLightPushResponse caps a response frame (its fields are an id, a
	// code, a description and a count).
	maxLightPushResponse = 64 << 10
)

// LightPushResult is a service node's successful answer.
type LightPushResult struct {
	StatusCode uint32 // LightPushSuccess
	Desc       string // status_desc, if sent
	RelayPeers uint32 // relay_peer_count, if sent: peers the node relayed to
}

// LightPushError is a non-200 status_code from the service node.
type LightPushError struct {
	Code uint32
	Desc string
}

func (e *LightPushError) Error() string {
	if e.Desc == "" {
		return fmt.Sprintf("wakupeer: lightpush refused: status %d", e.Code)
	}
	return fmt.Sprintf("wakupeer: lightpush refused: status %d: %s", e.Code, e.Desc)
}

// IsRetryable reports whether the same push may succeed later or through
// another service node: too many requests, internal error, service not
// available, out of RLN proofs (the node's rate for the epoch) and no peers
// to relay. 400, 413, 420 and 421 are about the request itself.
func (e *LightPushError) IsRetryable() bool {
	switch e.Code {
	case LightPushTooManyRequests, LightPushInternalServerError, LightPushServiceNotAvailable,
		LightPushOutOfRLNProof, LightPushNoPeersToRelay:
		return true
	}
	return false
}

// lightPushUnknownRequestID is the request id nwaku answers with when it
// did not read the request: rate limited, or undecodable
// (waku_lightpush/protocol.nim).
const lightPushUnknownRequestID = "N/A"

// ErrLightPushResponse wraps a response that could not be read as a valid
// answer to the request (undecodable, too large, wrong request id, no status).
var ErrLightPushResponse = errors.New("wakupeer: bad lightpush response")

// marshalLightPushRequest encodes LightpushRequest v3: request_id=1 string,
// pubsub_topic=20 string (optional), message=21 WakuMessage (field numbers
// checked against nwaku waku_lightpush/rpc_codec.nim, which requires
// request_id). The uvarint length-prefix framing is from spec waku-edge.md §3
// and nwaku's writeLp/readLp convention; it was not re-read in the v3 client
// source (unverified there, same as metadata and the older lightpush).
func marshalLightPushRequest(id, pubsubTopic string, msg []byte) []byte {
	b := make([]byte, 0, len(id)+len(pubsubTopic)+len(msg)+24)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, id)
	if pubsubTopic != "" {
		b = protowire.AppendTag(b, 20, protowire.BytesType)
		b = protowire.AppendString(b, pubsubTopic)
	}
	b = protowire.AppendTag(b, 21, protowire.BytesType)
	return protowire.AppendBytes(b, msg)
}

// lightPushResponse is LightPushResponse v3: request_id=1 string,
// status_code=10 uint32, status_desc=11 optional string,
// relay_peer_count=12 optional uint32. Unknown fields are skipped.
type lightPushResponse struct {
	RequestID  string
	StatusCode uint32
	HasStatus  bool
	Desc       string
	RelayPeers uint32
}

func (r *lightPushResponse) unmarshal(b []byte) error {
	*r = lightPushResponse{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case (num == 1 || num == 11) && typ == protowire.BytesType:
			v, n := protowire.ConsumeString(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			if num == 1 {
				r.RequestID = v
			} else {
				r.Desc = v
			}
		case (num == 10 || num == 12) && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			if num == 10 {
				r.StatusCode, r.HasStatus = uint32(v), true
			} else {
				r.RelayPeers = uint32(v)
			}
		case num == 1 || num == 10 || num == 11 || num == 12:
			return fmt.Errorf("field %d has wire type %d", num, typ)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	return nil
}

var errFrameTooLarge = errors.New("frame too large")

// readFrame reads one uvarint length-prefixed frame of at most limit bytes.
func readFrame(r *bufio.Reader, limit uint64) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	if n > limit {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", errFrameTooLarge, n, limit)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

func newRequestID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// LightPush asks the service node to relay m on pubsubTopic (empty: the node
// derives it from the content topic, autosharding) over lightpush v3: one
// uvarint length-prefixed request and one response on a fresh stream. If
// service has addresses they are added to the peerstore and the peer is
// dialled; with none, an existing connection or known addresses are used.
// A non-200 status is a *LightPushError; an unreadable or mismatched
// response wraps ErrLightPushResponse; transport failures are returned as is.
func (p *Peer) LightPush(ctx context.Context, service peer.AddrInfo, pubsubTopic string, m *wakuwire.Message) (LightPushResult, error) {
	if err := m.Validate(); err != nil {
		return LightPushResult{}, err
	}
	msg := m.Marshal()
	if len(msg) > MaxLightPushMessageSize {
		return LightPushResult{}, fmt.Errorf("wakupeer: lightpush message is %d bytes, limit %d", len(msg), MaxLightPushMessageSize)
	}
	id, err := newRequestID()
	if err != nil {
		return LightPushResult{}, err
	}
	req := marshalLightPushRequest(id, pubsubTopic, msg)
	if len(req) > maxLightPushRequest {
		return LightPushResult{}, fmt.Errorf("wakupeer: lightpush request is %d bytes, limit %d", len(req), maxLightPushRequest)
	}

	ctx, cancel := context.WithTimeout(ctx, DefaultLightPushTimeout)
	defer cancel()
	if len(service.Addrs) > 0 {
		if err := p.host.Connect(ctx, service); err != nil {
			return LightPushResult{}, fmt.Errorf("wakupeer: lightpush: connecting to %s: %w", service.ID, err)
		}
	}
	s, err := p.host.NewStream(ctx, service.ID, LightPushProtocol)
	if err != nil {
		return LightPushResult{}, fmt.Errorf("wakupeer: lightpush: opening stream to %s: %w", service.ID, err)
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	// The deadline does not cover a ctx cancelled early; reset then.
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()

	if err := writeDelimited(s, req); err != nil {
		_ = s.Reset()
		return LightPushResult{}, fmt.Errorf("wakupeer: lightpush: writing request: %w", ctxErr(ctx, err))
	}
	_ = s.CloseWrite()
	b, err := readFrame(bufio.NewReader(s), maxLightPushResponse)
	if err != nil {
		_ = s.Reset()
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			return LightPushResult{}, fmt.Errorf("%w: stream ended: %w", ErrLightPushResponse, err)
		case errors.Is(err, errFrameTooLarge):
			return LightPushResult{}, fmt.Errorf("%w: %w", ErrLightPushResponse, err)
		}
		return LightPushResult{}, fmt.Errorf("wakupeer: lightpush: reading response: %w", ctxErr(ctx, err))
	}
	var resp lightPushResponse
	if err := resp.unmarshal(b); err != nil {
		return LightPushResult{}, fmt.Errorf("%w: %w", ErrLightPushResponse, err)
	}
	if !resp.HasStatus {
		return LightPushResult{}, fmt.Errorf("%w: no status code", ErrLightPushResponse)
	}
	// A refusal of a request the node did not read carries no id of ours.
	unread := resp.RequestID == lightPushUnknownRequestID && resp.StatusCode != LightPushSuccess
	if resp.RequestID != id && !unread {
		return LightPushResult{}, fmt.Errorf("%w: request id %q, sent %q", ErrLightPushResponse, resp.RequestID, id)
	}
	if resp.StatusCode != LightPushSuccess {
		return LightPushResult{}, &LightPushError{Code: resp.StatusCode, Desc: resp.Desc}
	}
	return LightPushResult{StatusCode: resp.StatusCode, Desc: resp.Desc, RelayPeers: resp.RelayPeers}, nil
}

// ctxErr prefers ctx's error when ctx ended: a reset stream or a stream
// deadline (set from ctx's) says less. The stream deadline can fire a moment
// before ctx's timer, hence the clock check.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w (%w)", cerr, err)
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return fmt.Errorf("%w (%w)", context.DeadlineExceeded, err)
	}
	return err
}
