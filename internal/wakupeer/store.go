package wakupeer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/archivefleet/archivefleet/internal/wakuwire"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/encoding/protowire"
)

// StoreProtocol is 13/WAKU2-STORE v3, "store query" (vacp2p/rfc-index
// messaging/standards/core/13/store.md; nwaku waku_core/codecs.nim
// WakuStoreCodec, go-waku store.StoreQueryID_v300, js-waku StoreCodec).
// Status store nodes serve it (spec waku-edge.md §2).
const StoreProtocol = protocol.ID("/vac/waku/store-query/3.0.0")

// Store v3 status codes. nwaku waku_store/common.nim StatusCode/ErrorCode:
// 200 SUCCESS, 300 BAD_RESPONSE, 400 BAD_REQUEST, 429 TOO_MANY_REQUESTS,
// 503 SERVICE_UNAVAILABLE, 504 PEER_DIAL_FAILURE. nwaku answers 400 to a
// request it cannot decode (protocol.nim handleQueryRequest) but 300 to
// every error of its archive, an invalid query ("all zeroes cursor hash",
// "too many content topics") and an unknown cursor ("cursor not found")
// alike (node/kernel_api/store.nim toStoreResult); our service answers
// 400 to all of those (store_service.go). Clients treat every code outside
// 2xx as failure (RFC 13 "Store Query Response"; js-waku throws on
// >= 300, go-waku on != 200).
const (
	StoreSuccess            = 200
	StoreBadResponse        = 300
	StoreBadRequest         = 400
	StoreTooManyRequests    = 429
	StoreInternalError      = 500 // not sent by nwaku; ours, for a store that failed
	StoreServiceUnavailable = 503
	StorePeerDialFailure    = 504
)

const (
	// DefaultStorePageSize and MaxStorePageSize are nwaku's
	// (waku_store/common.nim DefaultPageSize 20, MaxPageSize 100; the same in
	// waku_archive/archive.nim, go-waku store/client.go and js-waku
	// store/rpc.js): an unset or zero pagination_limit gets the default, a
	// larger one the maximum.
	DefaultStorePageSize = 20
	MaxStorePageSize     = 100
	// MaxStoreContentTopics is nwaku's MaxContentTopicsPerQuery
	// (waku_archive/archive.nim) and go-waku's pb.MaxContentTopics.
	MaxStoreContentTopics = 10
	// DefaultStoreTimeout bounds one page (request and response) when ctx
	// has no earlier deadline.
	DefaultStoreTimeout = 30 * time.Second
	// MaxStoreMessageSize is the largest WakuMessage a page may carry
	// (Status allows 1 MiB relay messages, spec waku-edge.md §3).
	MaxStoreMessageSize = MaxRelayMessageSize
	// maxStoreRequest caps a request frame: ten content topics or a few
	// thousand hashes fit. nwaku reads requests without a limit
	// (rpc_codec.nim DefaultMaxRpcSize = -1).
	maxStoreRequest = 256 << 10
	// storeEntryOverhead bounds what a WakuMessageKeyValue adds to its
	// message: the 32-byte hash, a shard pubsub topic, tags and lengths.
	storeEntryOverhead = 1 << 10
)

// maxStoreResponse caps a response frame to a request for limit messages:
// limit messages of MaxStoreMessageSize with their keys, plus the status
// fields. For a full page of 100 that is about 100 MiB, the honest bound of
// the protocol; the frame is read as it arrives, not allocated up front.
func maxStoreResponse(limit uint64) uint64 {
	return limit*(MaxStoreMessageSize+storeEntryOverhead) + 64<<10
}

// StoreQuery is one Store v3 query (StoreQueryRequest). Either a content
// filtered query (PubsubTopic, ContentTopics, TimeStart, TimeEnd, all
// optional, content topics only with a pubsub topic) or a message hash
// lookup (Hashes, with none of the content filter fields), per RFC 13
// "Content filtered queries" and "Message hash lookup queries" and go-waku
// pb/validation.go, which refuses the same mixes before sending.
type StoreQuery struct {
	// PubsubTopic, when set, restricts the query to it; ContentTopics (at
	// most MaxStoreContentTopics) need it.
	PubsubTopic   string
	ContentTopics []string
	// TimeStart and TimeEnd bound the messages' timestamps, unix
	// nanoseconds, both inclusive as nwaku does (its SQL and queue drivers:
	// timestamp >= start AND timestamp <= end; RFC 13 says the end is
	// exclusive, js-waku's docs too, but the store nodes Status runs are
	// nwaku). 0 means unset.
	TimeStart, TimeEnd int64
	// Hashes makes the query a lookup of these messages.
	Hashes [][32]byte
	// Cursor is the message hash to continue after (exclusive), from a
	// previous StorePage.Cursor of the same query; nil for the first page.
	Cursor []byte
	// Forward pages from the oldest message to the newest; false (the
	// protocol's default) from the newest back. Within a page, messages are
	// always oldest first (RFC 13 "Populating response messages").
	Forward bool
	// Limit is the page size, 0 for DefaultStorePageSize; above
	// MaxStorePageSize it is lowered to that, as a store node would.
	Limit uint64
	// IncludeData asks for the messages, not only their hashes.
	IncludeData bool
}

// StoredMessage is one entry of a page: always its hash; with IncludeData
// also the message and the pubsub topic it was relayed on, checked to hash
// to Hash.
type StoredMessage struct {
	Hash        [32]byte
	PubsubTopic string
	Message     *wakuwire.Message
}

// StorePage is one response: its messages, oldest first, and the cursor to
// ask for the next page with (nil: this is the last page).
type StorePage struct {
	Messages []StoredMessage
	Cursor   []byte
}

// StoreError is a status code outside 2xx from the store node.
type StoreError struct {
	Code uint32
	Desc string
}

func (e *StoreError) Error() string {
	if e.Desc == "" {
		return fmt.Sprintf("wakupeer: store query refused: status %d", e.Code)
	}
	return fmt.Sprintf("wakupeer: store query refused: status %d: %s", e.Code, e.Desc)
}

// IsRetryable reports whether the same query may succeed later or at another
// store node: too many requests (nwaku's rate limit), an internal error,
// service unavailable, and peer dial failure (a node querying on someone's
// behalf could not reach the store). 400 is about the query itself; nwaku's
// 300 covers an invalid query and an unknown cursor as well as a failing
// database, so it is not retried either: ask another node instead.
func (e *StoreError) IsRetryable() bool {
	switch e.Code {
	case StoreTooManyRequests, StoreInternalError, StoreServiceUnavailable, StorePeerDialFailure:
		return true
	}
	return false
}

// ErrStoreResponse wraps a response that could not be read as a valid
// answer to the query: undecodable, too large, wrong request id, no status,
// more messages than asked for, a message whose hash is not the one it is
// listed under, a message outside the query, or a cursor that is not the
// last message of the page.
var ErrStoreResponse = errors.New("wakupeer: bad store response")

// ErrStoreQuery is a query this client will not send (see StoreQuery).
var ErrStoreQuery = errors.New("wakupeer: invalid store query")

// storeRequest is StoreQueryRequest. Field numbers: nwaku
// waku/waku_store/rpc_codec.nim (7d1c6ab), js-waku
// packages/proto/src/lib/store_v3.proto (as generated in @waku/proto 0.0.8
// store_v3.js), go-waku store/pb/storev3.proto and RFC 13, which agree:
// request_id=1 string, include_data=2 bool, pubsub_topic=10 optional string,
// content_topics=11 repeated string, time_start=12 and time_end=13 optional
// sint64 (zigzag, ns), message_hashes=20 repeated bytes,
// pagination_cursor=51 optional bytes, pagination_forward=52 bool,
// pagination_limit=53 optional uint64. An empty pubsub topic is treated as
// unset.
type storeRequest struct {
	RequestID      string
	IncludeData    bool
	PubsubTopic    string
	ContentTopics  []string
	TimeStart      int64
	HasTimeStart   bool
	TimeEnd        int64
	HasTimeEnd     bool
	Hashes         [][]byte
	Cursor         []byte
	HasCursor      bool
	Forward        bool
	Limit          uint64
	HasLimit       bool
	sawWrongLength bool // a hash or cursor that is not 32 bytes
}

func (r *storeRequest) marshal() []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, r.RequestID)
	if r.IncludeData {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	if r.PubsubTopic != "" {
		b = protowire.AppendTag(b, 10, protowire.BytesType)
		b = protowire.AppendString(b, r.PubsubTopic)
	}
	for _, t := range r.ContentTopics {
		b = protowire.AppendTag(b, 11, protowire.BytesType)
		b = protowire.AppendString(b, t)
	}
	if r.HasTimeStart {
		b = protowire.AppendTag(b, 12, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeZigZag(r.TimeStart))
	}
	if r.HasTimeEnd {
		b = protowire.AppendTag(b, 13, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeZigZag(r.TimeEnd))
	}
	for _, h := range r.Hashes {
		b = protowire.AppendTag(b, 20, protowire.BytesType)
		b = protowire.AppendBytes(b, h)
	}
	if r.HasCursor {
		b = protowire.AppendTag(b, 51, protowire.BytesType)
		b = protowire.AppendBytes(b, r.Cursor)
	}
	if r.Forward {
		b = protowire.AppendTag(b, 52, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	if r.HasLimit {
		b = protowire.AppendTag(b, 53, protowire.VarintType)
		b = protowire.AppendVarint(b, r.Limit)
	}
	return b
}

// unmarshal decodes a request strictly: a known field with the wrong wire
// type or a truncated field is an error (the service answers 400, as nwaku
// does when its decoder fails); unknown fields are skipped; for a repeated
// scalar field the last occurrence wins.
func (r *storeRequest) unmarshal(b []byte) error {
	*r = storeRequest{}
	sawID := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var want protowire.Type
		switch num {
		case 1, 10, 11, 20, 51:
			want = protowire.BytesType
		case 2, 12, 13, 52, 53:
			want = protowire.VarintType
		default:
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		if typ != want {
			return fmt.Errorf("field %d has wire type %d", num, typ)
		}
		if typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			switch num {
			case 2:
				r.IncludeData = v != 0
			case 12:
				r.TimeStart, r.HasTimeStart = protowire.DecodeZigZag(v), true
			case 13:
				r.TimeEnd, r.HasTimeEnd = protowire.DecodeZigZag(v), true
			case 52:
				r.Forward = v != 0
			case 53:
				r.Limit, r.HasLimit = v, true
			}
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		switch num {
		case 1:
			r.RequestID, sawID = string(v), true
		case 10:
			r.PubsubTopic = string(v)
		case 11:
			r.ContentTopics = append(r.ContentTopics, string(v))
		case 20:
			r.Hashes = append(r.Hashes, bytes.Clone(v))
			r.sawWrongLength = r.sawWrongLength || len(v) != 32
		case 51:
			r.Cursor, r.HasCursor = bytes.Clone(v), true
		}
	}
	if !sawID || r.RequestID == "" {
		// nwaku: missingRequiredField("request_id"); go-waku's client
		// refuses an empty one.
		return errors.New("no request_id")
	}
	return nil
}

// storeKeyValue is WakuMessageKeyValue: message_hash=1 bytes, message=2
// WakuMessage, pubsub_topic=3 string; message and pubsub_topic are both set
// or both unset (RFC 13; nwaku rpc_codec.nim encodes and decodes them as a
// pair).
type storeKeyValue struct {
	Hash        []byte
	Message     []byte // the WakuMessage as sent; nil when absent
	HasMessage  bool
	PubsubTopic string
	HasTopic    bool
}

// storeResponse is StoreQueryResponse: request_id=1 string, status_code=10
// uint32, status_desc=11 string, messages=20 repeated WakuMessageKeyValue,
// pagination_cursor=51 optional bytes (same sources as storeRequest).
type storeResponse struct {
	RequestID  string
	StatusCode uint32
	HasStatus  bool
	Desc       string
	Messages   []storeKeyValue
	Cursor     []byte
	HasCursor  bool
}

func appendStoreKeyValue(b []byte, kv storeKeyValue) []byte {
	n := protowire.SizeTag(1) + protowire.SizeBytes(len(kv.Hash))
	if kv.HasMessage {
		n += protowire.SizeTag(2) + protowire.SizeBytes(len(kv.Message))
	}
	if kv.HasTopic {
		n += protowire.SizeTag(3) + protowire.SizeBytes(len(kv.PubsubTopic))
	}
	b = protowire.AppendTag(b, 20, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, kv.Hash)
	if kv.HasMessage {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, kv.Message)
	}
	if kv.HasTopic {
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendString(b, kv.PubsubTopic)
	}
	return b
}

func (r *storeResponse) marshal() []byte {
	n := len(r.RequestID) + len(r.Desc) + 64
	for _, kv := range r.Messages {
		n += len(kv.Message) + len(kv.PubsubTopic) + len(kv.Hash) + 24
	}
	b := make([]byte, 0, n)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, r.RequestID)
	b = protowire.AppendTag(b, 10, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(r.StatusCode))
	if r.Desc != "" {
		b = protowire.AppendTag(b, 11, protowire.BytesType)
		b = protowire.AppendString(b, r.Desc)
	}
	for _, kv := range r.Messages {
		b = appendStoreKeyValue(b, kv)
	}
	if r.HasCursor {
		b = protowire.AppendTag(b, 51, protowire.BytesType)
		b = protowire.AppendBytes(b, r.Cursor)
	}
	return b
}

func (r *storeResponse) unmarshal(b []byte) error {
	*r = storeResponse{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == 10 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			r.StatusCode, r.HasStatus = uint32(v), true
		case (num == 1 || num == 11 || num == 20 || num == 51) && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			switch num {
			case 1:
				r.RequestID = string(v)
			case 11:
				r.Desc = string(v)
			case 20:
				var kv storeKeyValue
				if err := kv.unmarshal(v); err != nil {
					return fmt.Errorf("message %d: %w", len(r.Messages), err)
				}
				r.Messages = append(r.Messages, kv)
			case 51:
				r.Cursor, r.HasCursor = bytes.Clone(v), true
			}
		case num == 1 || num == 10 || num == 11 || num == 20 || num == 51:
			return fmt.Errorf("field %d has wire type %d", num, typ)
		default:
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	return nil
}

func (kv *storeKeyValue) unmarshal(b []byte) error {
	*kv = storeKeyValue{}
	sawHash := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if num < 1 || num > 3 {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		if typ != protowire.BytesType {
			return fmt.Errorf("field %d has wire type %d", num, typ)
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		switch num {
		case 1:
			kv.Hash, sawHash = bytes.Clone(v), true
		case 2:
			kv.Message, kv.HasMessage = bytes.Clone(v), true
		case 3:
			kv.PubsubTopic, kv.HasTopic = string(v), true
		}
	}
	if !sawHash {
		return errors.New("no message_hash") // nwaku: missingRequiredField
	}
	return nil
}

// readFrameGrowing reads one uvarint length-prefixed frame of at most limit
// bytes, growing the buffer as the data arrives: unlike readFrame it does
// not allocate a length a peer merely announced (a store response may be
// allowed 100 MiB).
func readFrameGrowing(r *bufio.Reader, limit uint64) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	if n > limit {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", errFrameTooLarge, n, limit)
	}
	var buf bytes.Buffer
	buf.Grow(int(min(n, 64<<10)))
	got, err := io.Copy(&buf, io.LimitReader(r, int64(n)))
	if err != nil {
		return nil, err
	}
	if uint64(got) != n {
		return nil, io.ErrUnexpectedEOF
	}
	return buf.Bytes(), nil
}

// request checks q and turns it into the request to send: the checks are
// go-waku's (pb/validation.go StoreQueryRequest.Validate) plus RFC 13's
// "content topics only with a pubsub topic"; the limit is always sent, as
// go-waku does, so the response cap can follow from it.
func (q *StoreQuery) request(id string) (storeRequest, error) {
	r := storeRequest{
		RequestID: id, IncludeData: q.IncludeData, PubsubTopic: q.PubsubTopic,
		ContentTopics: q.ContentTopics, Forward: q.Forward, HasLimit: true,
		TimeStart: q.TimeStart, HasTimeStart: q.TimeStart != 0,
		TimeEnd: q.TimeEnd, HasTimeEnd: q.TimeEnd != 0,
	}
	r.Limit = q.Limit
	switch {
	case r.Limit == 0:
		r.Limit = DefaultStorePageSize
	case r.Limit > MaxStorePageSize:
		r.Limit = MaxStorePageSize
	}
	filtered := q.PubsubTopic != "" || len(q.ContentTopics) > 0 || r.HasTimeStart || r.HasTimeEnd
	switch {
	case len(q.Hashes) > 0 && filtered:
		return r, fmt.Errorf("%w: a hash lookup cannot have a pubsub topic, content topics or a time range", ErrStoreQuery)
	case len(q.ContentTopics) > 0 && q.PubsubTopic == "":
		return r, fmt.Errorf("%w: content topics need a pubsub topic", ErrStoreQuery)
	case len(q.ContentTopics) > MaxStoreContentTopics:
		return r, fmt.Errorf("%w: %d content topics, at most %d", ErrStoreQuery, len(q.ContentTopics), MaxStoreContentTopics)
	case slices.Contains(q.ContentTopics, ""):
		return r, fmt.Errorf("%w: empty content topic", ErrStoreQuery)
	case r.HasTimeStart && r.HasTimeEnd && q.TimeStart > q.TimeEnd:
		return r, fmt.Errorf("%w: time range starts after it ends", ErrStoreQuery)
	case q.Cursor != nil && len(q.Cursor) != 32:
		return r, fmt.Errorf("%w: cursor of %d bytes, want a 32-byte message hash", ErrStoreQuery, len(q.Cursor))
	}
	for _, h := range q.Hashes {
		r.Hashes = append(r.Hashes, bytes.Clone(h[:]))
	}
	if q.Cursor != nil {
		r.Cursor, r.HasCursor = bytes.Clone(q.Cursor), true
	}
	if len(r.marshal()) > maxStoreRequest {
		return r, fmt.Errorf("%w: request over %d bytes", ErrStoreQuery, maxStoreRequest)
	}
	return r, nil
}

// StoreQuery asks the store node for one page: one uvarint length-prefixed
// StoreQueryRequest and one response on a fresh stream (nwaku
// waku_store/protocol.nim readLp/writeLp; go-waku pbio delimited). If node
// has addresses they are added and dialled; with none, an existing
// connection or known addresses are used.
//
// The page is checked before it is returned, since a store node is trusted
// for nothing: every message that comes with data must hash
// (wakuwire.Hash) to the hash it is listed under, so a node cannot pass off
// one message as another, and must match the query (pubsub topic, content
// topics, time range, looked-up hashes); messages must be oldest first, no
// more than the limit; and a cursor, if any, must be the hash of the last
// message in paging order (the newest of the page going forward, the
// oldest going backward: RFC 13, nwaku archive.nim), so following cursors
// always moves on. A non-2xx status is a *StoreError; a response that fails
// these checks wraps ErrStoreResponse; transport failures are returned as
// is.
func (p *Peer) StoreQuery(ctx context.Context, node peer.AddrInfo, q StoreQuery) (StorePage, error) {
	id, err := newRequestID()
	if err != nil {
		return StorePage{}, err
	}
	req, err := q.request(id)
	if err != nil {
		return StorePage{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, DefaultStoreTimeout)
	defer cancel()
	if len(node.Addrs) > 0 {
		if err := p.host.Connect(ctx, node); err != nil {
			return StorePage{}, fmt.Errorf("wakupeer: store: connecting to %s: %w", node.ID, err)
		}
	}
	s, err := p.host.NewStream(ctx, node.ID, StoreProtocol)
	if err != nil {
		return StorePage{}, fmt.Errorf("wakupeer: store: opening stream to %s: %w", node.ID, err)
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()

	if err := writeDelimited(s, req.marshal()); err != nil {
		_ = s.Reset()
		return StorePage{}, fmt.Errorf("wakupeer: store: writing request: %w", ctxErr(ctx, err))
	}
	_ = s.CloseWrite()
	b, err := readFrameGrowing(bufio.NewReader(s), maxStoreResponse(req.Limit))
	if err != nil {
		_ = s.Reset()
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			if ctx.Err() == nil {
				return StorePage{}, fmt.Errorf("%w: stream ended: %w", ErrStoreResponse, err)
			}
		case errors.Is(err, errFrameTooLarge):
			return StorePage{}, fmt.Errorf("%w: %w", ErrStoreResponse, err)
		}
		return StorePage{}, fmt.Errorf("wakupeer: store: reading response: %w", ctxErr(ctx, err))
	}
	var resp storeResponse
	if err := resp.unmarshal(b); err != nil {
		return StorePage{}, fmt.Errorf("%w: %w", ErrStoreResponse, err)
	}
	if !resp.HasStatus {
		return StorePage{}, fmt.Errorf("%w: no status code", ErrStoreResponse)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// nwaku leaves request_id empty in its error answers and sends
		// "N/A" when rate limiting (protocol.nim); go-waku accepts both.
		if resp.RequestID != id && resp.RequestID != "" && resp.RequestID != "N/A" {
			return StorePage{}, fmt.Errorf("%w: status %d for request id %q, sent %q", ErrStoreResponse, resp.StatusCode, resp.RequestID, id)
		}
		return StorePage{}, &StoreError{Code: resp.StatusCode, Desc: resp.Desc}
	}
	if resp.RequestID != id {
		return StorePage{}, fmt.Errorf("%w: request id %q, sent %q", ErrStoreResponse, resp.RequestID, id)
	}
	page, err := checkStorePage(&req, &resp)
	if err != nil {
		return StorePage{}, fmt.Errorf("%w: %w", ErrStoreResponse, err)
	}
	return page, nil
}

// checkStorePage verifies a successful response against its request (see
// StoreQuery) and converts it.
func checkStorePage(req *storeRequest, resp *storeResponse) (StorePage, error) {
	if uint64(len(resp.Messages)) > req.Limit {
		return StorePage{}, fmt.Errorf("%d messages, limit %d", len(resp.Messages), req.Limit)
	}
	var lookup map[[32]byte]bool
	if len(req.Hashes) > 0 {
		lookup = make(map[[32]byte]bool, len(req.Hashes))
		for _, h := range req.Hashes {
			lookup[[32]byte(h)] = true
		}
	}
	page := StorePage{Messages: make([]StoredMessage, 0, len(resp.Messages))}
	for i, kv := range resp.Messages {
		if len(kv.Hash) != 32 {
			return StorePage{}, fmt.Errorf("message %d: hash of %d bytes", i, len(kv.Hash))
		}
		sm := StoredMessage{Hash: [32]byte(kv.Hash)}
		if lookup != nil && !lookup[sm.Hash] {
			return StorePage{}, fmt.Errorf("message %d: %x was not looked up", i, sm.Hash)
		}
		if kv.HasMessage != kv.HasTopic {
			return StorePage{}, fmt.Errorf("message %d: message and pubsub_topic must come together", i)
		}
		if !kv.HasMessage {
			if req.IncludeData {
				return StorePage{}, fmt.Errorf("message %d (%x): no data although include_data was set", i, sm.Hash)
			}
			page.Messages = append(page.Messages, sm)
			continue
		}
		if len(kv.Message) > MaxStoreMessageSize {
			return StorePage{}, fmt.Errorf("message %d: %d bytes, limit %d", i, len(kv.Message), MaxStoreMessageSize)
		}
		m := new(wakuwire.Message)
		if err := m.Unmarshal(kv.Message); err != nil {
			return StorePage{}, fmt.Errorf("message %d: %w", i, err)
		}
		if got := wakuwire.Hash(kv.PubsubTopic, m); got != sm.Hash {
			return StorePage{}, fmt.Errorf("message %d: listed under hash %x, but the message hashes to %x", i, sm.Hash, got)
		}
		switch {
		case req.PubsubTopic != "" && kv.PubsubTopic != req.PubsubTopic:
			return StorePage{}, fmt.Errorf("message %d (%x): pubsub topic %q, asked for %q", i, sm.Hash, kv.PubsubTopic, req.PubsubTopic)
		case len(req.ContentTopics) > 0 && !slices.Contains(req.ContentTopics, m.ContentTopic):
			return StorePage{}, fmt.Errorf("message %d (%x): content topic %q not asked for", i, sm.Hash, m.ContentTopic)
		case req.HasTimeStart && m.Timestamp < req.TimeStart, req.HasTimeEnd && m.Timestamp > req.TimeEnd:
			return StorePage{}, fmt.Errorf("message %d (%x): timestamp %d outside the time range", i, sm.Hash, m.Timestamp)
		}
		if i > 0 && page.Messages[i-1].Message != nil {
			prev := page.Messages[i-1]
			if c := cmpStoreKey(prev.Message.Timestamp, prev.Hash, m.Timestamp, sm.Hash); c >= 0 {
				return StorePage{}, fmt.Errorf("message %d (%x): not after the message before it (pages are oldest first)", i, sm.Hash)
			}
		}
		sm.PubsubTopic, sm.Message = kv.PubsubTopic, m
		page.Messages = append(page.Messages, sm)
	}
	if resp.HasCursor {
		if len(page.Messages) == 0 {
			return StorePage{}, errors.New("a cursor on an empty page")
		}
		last := page.Messages[len(page.Messages)-1].Hash
		if !req.Forward {
			last = page.Messages[0].Hash
		}
		if !bytes.Equal(resp.Cursor, last[:]) {
			return StorePage{}, fmt.Errorf("cursor %x is not the hash of the page's last message in paging order (%x)", resp.Cursor, last)
		}
		if req.HasCursor && bytes.Equal(resp.Cursor, req.Cursor) {
			return StorePage{}, errors.New("the cursor sent back is the one asked with")
		}
		page.Cursor = resp.Cursor
	}
	return page, nil
}

// cmpStoreKey orders stored messages as RFC 13 "Waku message sorting" and
// nwaku (queue_driver/index.nim cmp; postgres ORDER BY timestamp,
// messageHash) do: by timestamp, then by hash bytes.
func cmpStoreKey(ts1 int64, h1 [32]byte, ts2 int64, h2 [32]byte) int {
	if ts1 != ts2 {
		if ts1 < ts2 {
			return -1
		}
		return 1
	}
	return bytes.Compare(h1[:], h2[:])
}

// StoreQueryAll runs q page by page, following the cursors until a page
// comes without one, calling page for each (an error from it stops the
// query and is returned). It returns the number of pages received. A cursor
// that comes back a second time (a store that would keep us paging in a
// circle) wraps ErrStoreResponse; each page is checked as in StoreQuery,
// so every page moves past the one before. ctx bounds the whole query,
// DefaultStoreTimeout each page.
func (p *Peer) StoreQueryAll(ctx context.Context, node peer.AddrInfo, q StoreQuery, page func(StorePage) error) (pages int, err error) {
	seen := map[string]bool{}
	if q.Cursor != nil {
		seen[string(q.Cursor)] = true
	}
	for {
		pg, err := p.StoreQuery(ctx, node, q)
		if err != nil {
			return pages, err
		}
		pages++
		if err := page(pg); err != nil {
			return pages, err
		}
		if pg.Cursor == nil {
			return pages, nil
		}
		if seen[string(pg.Cursor)] {
			return pages, fmt.Errorf("%w: cursor %x repeated on page %d", ErrStoreResponse, pg.Cursor, pages)
		}
		seen[string(pg.Cursor)] = true
		q.Cursor = pg.Cursor
	}
}
