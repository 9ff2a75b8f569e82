// Package store is 13/WAKU2-STORE v3, "store query": the client the Waku
// edge back-fills with (Client), which trusts a store node for nothing, and
// an in-memory service (Service) for tests and a local dev node. The wire
// types are generated (storepb) from the Store v3 and WakuMessage .proto
// definitions (internal/waku/proto).
package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/archivefleet/archivefleet/internal/waku/relay"
	"github.com/archivefleet/archivefleet/internal/waku/rpc"
	"github.com/archivefleet/archivefleet/internal/waku/store/storepb"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/proto"
)

// Protocol is 13/WAKU2-STORE v3, "store query": the id nwaku, go-waku and
// js-waku use and Status's store nodes serve (docs/waku-edge.md).
const Protocol = protocol.ID("/vac/waku/store-query/3.0.0")

// Status is a Store v3 status code. nwaku waku_store/common.nim
// StatusCode/ErrorCode: 200 SUCCESS, 300 BAD_RESPONSE, 400 BAD_REQUEST, 429
// TOO_MANY_REQUESTS, 503 SERVICE_UNAVAILABLE, 504 PEER_DIAL_FAILURE. nwaku
// answers 400 to a request it cannot decode (protocol.nim
// handleQueryRequest) but 300 to every error of its archive, an invalid
// query ("all zeroes cursor hash", "too many content topics") and an
// unknown cursor ("cursor not found") alike (node/kernel_api/store.nim
// toStoreResult); our service answers 400 to all of those (service.go).
// Clients treat every code outside 2xx as failure (RFC 13 "Store Query
// Response"; js-waku throws on >= 300, go-waku on != 200). A refusal is a
// *rpc.StatusError[Status].
type Status uint32

// Store v3 status codes.
const (
	Success            Status = 200
	BadResponse        Status = 300
	BadRequest         Status = 400
	TooManyRequests    Status = 429
	InternalError      Status = 500 // not sent by nwaku; ours, for a store that failed
	ServiceUnavailable Status = 503
	PeerDialFailure    Status = 504
)

// Protocol names the protocol in a StatusError's message.
func (Status) Protocol() string { return "store query" }

// Retryable reports whether the same query may succeed later or at another
// store node: too many requests (nwaku's rate limit), an internal error,
// service unavailable, and peer dial failure (a node querying on someone's
// behalf could not reach the store). 400 is about the query itself; nwaku's
// 300 covers an invalid query and an unknown cursor as well as a failing
// database, so it is not retried either: ask another node instead.
func (c Status) Retryable() bool {
	switch c {
	case TooManyRequests, InternalError, ServiceUnavailable, PeerDialFailure:
		return true
	}
	return false
}

const (
	// DefaultPageSize and MaxPageSize are nwaku's (waku_store/common.nim
	// DefaultPageSize 20, MaxPageSize 100; the same in
	// waku_archive/archive.nim, go-waku store/client.go and js-waku
	// store/rpc.js): an unset or zero pagination_limit gets the default, a
	// larger one the maximum.
	DefaultPageSize = 20
	MaxPageSize     = 100
	// MaxContentTopics is nwaku's MaxContentTopicsPerQuery
	// (waku_archive/archive.nim) and go-waku's pb.MaxContentTopics.
	MaxContentTopics = 10
	// DefaultTimeout bounds one page (request and response) when ctx has
	// no earlier deadline.
	DefaultTimeout = 30 * time.Second
	// MaxMessageSize is the largest WakuMessage a page may carry: Status
	// relays messages up to gossipsub's 1 MiB frame.
	MaxMessageSize = relay.MaxFrameSize
	// MaxRequestSize caps a request frame: ten content topics or a few
	// thousand hashes fit. nwaku reads requests without a limit
	// (rpc_codec.nim DefaultMaxRpcSize = -1).
	MaxRequestSize = 256 << 10
	// entryOverhead bounds what a WakuMessageKeyValue adds to its message:
	// the 32-byte hash, a shard pubsub topic, tags and lengths.
	entryOverhead = 1 << 10
)

// MaxResponseSize caps a response frame to a request for limit messages:
// limit messages of MaxMessageSize with their keys, plus the status fields.
// For a full page of 100 that is about 100 MiB, the honest bound of the
// protocol; the frame is read as it arrives, not allocated up front.
func MaxResponseSize(limit uint64) uint64 {
	return limit*(MaxMessageSize+entryOverhead) + 64<<10
}

// Query is one Store v3 query (StoreQueryRequest). Either a content
// filtered query (PubsubTopic, ContentTopics, TimeStart, TimeEnd, all
// optional, content topics only with a pubsub topic) or a message hash
// lookup (Hashes, with none of the content filter fields), per RFC 13
// "Content filtered queries" and "Message hash lookup queries" and go-waku
// pb/validation.go, which refuses the same mixes before sending.
type Query struct {
	// PubsubTopic, when set, restricts the query to it; ContentTopics (at
	// most MaxContentTopics) need it.
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
	// previous Page.Cursor of the same query; nil for the first page.
	Cursor []byte
	// Forward pages from the oldest message to the newest; false (the
	// protocol's default) from the newest back. Within a page, messages are
	// always oldest first (RFC 13 "Populating response messages").
	Forward bool
	// Limit is the page size, 0 for DefaultPageSize; above MaxPageSize it
	// is lowered to that, as a store node would.
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

// Page is one response: its messages, oldest first, and the cursor to ask
// for the next page with (nil: this is the last page).
type Page struct {
	Messages []StoredMessage
	Cursor   []byte
}

// ErrResponse wraps a response that could not be read as a valid answer to
// the query: undecodable, too large, wrong request id, no status, more
// messages than asked for, a message whose hash is not the one it is
// listed under, a message outside the query, or a cursor that is not the
// last message of the page.
var ErrResponse = errors.New("waku: bad store response")

// ErrQuery is a query this client will not send (see Query).
var ErrQuery = errors.New("waku: invalid store query")

// The wire types are storepb's. Field numbers (nwaku
// waku/waku_store/rpc_codec.nim, js-waku store_v3.proto, go-waku
// storev3.proto and RFC 13 agree): StoreQueryRequest request_id=1,
// include_data=2, pubsub_topic=10 (optional), content_topics=11,
// time_start=12 and time_end=13 (optional sint64, ns), message_hashes=20,
// pagination_cursor=51 (optional), pagination_forward=52,
// pagination_limit=53 (optional); StoreQueryResponse request_id=1,
// status_code=10 (optional), status_desc=11, messages=20,
// pagination_cursor=51; WakuMessageKeyValue message_hash=1, message=2,
// pubsub_topic=3, message and pubsub_topic both set or both unset (nwaku
// encodes and decodes them as a pair). An empty pubsub topic is treated as
// unset. Optional fields are set only when they hold something, so the
// bytes are nwaku's.

// decodeRequest decodes a request strictly (rpc.Unmarshal: the service
// answers 400 to what nwaku's decoder refuses); it must have a request id.
func decodeRequest(b []byte) (*storepb.StoreQueryRequest, error) {
	req := new(storepb.StoreQueryRequest)
	if err := rpc.Unmarshal(b, req); err != nil {
		return nil, err
	}
	if req.RequestId == "" {
		// nwaku: missingRequiredField("request_id"); go-waku's client
		// refuses an empty one.
		return nil, errors.New("no request_id")
	}
	return req, nil
}

// decodeResponse decodes a response strictly; every entry must have a hash.
func decodeResponse(b []byte) (*storepb.StoreQueryResponse, error) {
	resp := new(storepb.StoreQueryResponse)
	if err := rpc.Unmarshal(b, resp); err != nil {
		return nil, err
	}
	for i, kv := range resp.Messages {
		if kv.MessageHash == nil {
			return nil, fmt.Errorf("message %d: no message_hash", i) // nwaku: missingRequiredField
		}
	}
	return resp, nil
}

// toProto is m as storepb's WakuMessage, sharing its byte slices, with the
// zero fields unset as wakuwire's encoder leaves them out: it encodes to the
// same bytes.
func toProto(m *wakuwire.Message) *storepb.WakuMessage {
	w := &storepb.WakuMessage{Payload: m.Payload, ContentTopic: m.ContentTopic}
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

// request checks q and turns it into the request to send: the checks are
// go-waku's (pb/validation.go StoreQueryRequest.Validate) plus RFC 13's
// "content topics only with a pubsub topic"; the limit is always sent, as
// go-waku does, so the response cap can follow from it.
func (q *Query) request(id string) (*storepb.StoreQueryRequest, error) {
	limit := q.Limit
	switch {
	case limit == 0:
		limit = DefaultPageSize
	case limit > MaxPageSize:
		limit = MaxPageSize
	}
	r := &storepb.StoreQueryRequest{RequestId: id, IncludeData: q.IncludeData, ContentTopics: q.ContentTopics,
		PaginationForward: q.Forward, PaginationLimit: proto.Uint64(limit)}
	if q.PubsubTopic != "" {
		r.PubsubTopic = proto.String(q.PubsubTopic)
	}
	if q.TimeStart != 0 {
		r.TimeStart = proto.Int64(q.TimeStart)
	}
	if q.TimeEnd != 0 {
		r.TimeEnd = proto.Int64(q.TimeEnd)
	}
	filtered := q.PubsubTopic != "" || len(q.ContentTopics) > 0 || q.TimeStart != 0 || q.TimeEnd != 0
	switch {
	case len(q.Hashes) > 0 && filtered:
		return nil, fmt.Errorf("%w: a hash lookup cannot have a pubsub topic, content topics or a time range", ErrQuery)
	case len(q.ContentTopics) > 0 && q.PubsubTopic == "":
		return nil, fmt.Errorf("%w: content topics need a pubsub topic", ErrQuery)
	case len(q.ContentTopics) > MaxContentTopics:
		return nil, fmt.Errorf("%w: %d content topics, at most %d", ErrQuery, len(q.ContentTopics), MaxContentTopics)
	case slices.Contains(q.ContentTopics, ""):
		return nil, fmt.Errorf("%w: empty content topic", ErrQuery)
	case q.TimeStart != 0 && q.TimeEnd != 0 && q.TimeStart > q.TimeEnd:
		return nil, fmt.Errorf("%w: time range starts after it ends", ErrQuery)
	case q.Cursor != nil && len(q.Cursor) != 32:
		return nil, fmt.Errorf("%w: cursor of %d bytes, want a 32-byte message hash", ErrQuery, len(q.Cursor))
	}
	for _, h := range q.Hashes {
		r.MessageHashes = append(r.MessageHashes, bytes.Clone(h[:]))
	}
	if q.Cursor != nil {
		r.PaginationCursor = bytes.Clone(q.Cursor)
	}
	if proto.Size(r) > MaxRequestSize {
		return nil, fmt.Errorf("%w: request over %d bytes", ErrQuery, MaxRequestSize)
	}
	return r, nil
}

// Client queries Store v3 nodes from Host.
type Client struct {
	Host host.Host
}

// Query asks the store node for one page: one uvarint length-prefixed
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
// always moves on. A non-2xx status is a *rpc.StatusError[Status]; a
// response that fails these checks wraps ErrResponse; transport failures
// are returned as is.
func (c Client) Query(ctx context.Context, node peer.AddrInfo, q Query) (Page, error) {
	id, err := rpc.NewRequestID()
	if err != nil {
		return Page{}, err
	}
	req, err := q.request(id)
	if err != nil {
		return Page{}, err
	}
	wire, err := proto.Marshal(req)
	if err != nil {
		return Page{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
	defer cancel()
	if len(node.Addrs) > 0 {
		if err := c.Host.Connect(ctx, node); err != nil {
			return Page{}, fmt.Errorf("waku store: connecting to %s: %w", node.ID, err)
		}
	}
	s, err := c.Host.NewStream(ctx, node.ID, Protocol)
	if err != nil {
		return Page{}, fmt.Errorf("waku store: opening stream to %s: %w", node.ID, err)
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()

	if err := rpc.WriteFrame(s, wire); err != nil {
		_ = s.Reset()
		return Page{}, fmt.Errorf("waku store: writing request: %w", rpc.ContextError(ctx, err))
	}
	_ = s.CloseWrite()
	b, err := rpc.ReadFrameGrowing(bufio.NewReader(s), MaxResponseSize(req.GetPaginationLimit()))
	if err != nil {
		_ = s.Reset()
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			if ctx.Err() == nil {
				return Page{}, fmt.Errorf("%w: stream ended: %w", ErrResponse, err)
			}
		case errors.Is(err, rpc.ErrFrameTooLarge):
			return Page{}, fmt.Errorf("%w: %w", ErrResponse, err)
		}
		return Page{}, fmt.Errorf("waku store: reading response: %w", rpc.ContextError(ctx, err))
	}
	resp, err := decodeResponse(b)
	if err != nil {
		return Page{}, fmt.Errorf("%w: %w", ErrResponse, err)
	}
	if resp.StatusCode == nil {
		return Page{}, fmt.Errorf("%w: no status code", ErrResponse)
	}
	if code := resp.GetStatusCode(); code < 200 || code > 299 {
		// nwaku leaves request_id empty in its error answers and sends
		// "N/A" when rate limiting (protocol.nim); go-waku accepts both.
		if resp.RequestId != id && resp.RequestId != "" && resp.RequestId != rpc.UnknownRequestID {
			return Page{}, fmt.Errorf("%w: status %d for request id %q, sent %q", ErrResponse, code, resp.RequestId, id)
		}
		return Page{}, &rpc.StatusError[Status]{Code: Status(code), Desc: resp.GetStatusDesc()}
	}
	if resp.RequestId != id {
		return Page{}, fmt.Errorf("%w: request id %q, sent %q", ErrResponse, resp.RequestId, id)
	}
	page, err := checkPage(req, resp)
	if err != nil {
		return Page{}, fmt.Errorf("%w: %w", ErrResponse, err)
	}
	return page, nil
}

// checkPage verifies a successful response against its request (see
// Client.Query) and converts it.
func checkPage(req *storepb.StoreQueryRequest, resp *storepb.StoreQueryResponse) (Page, error) {
	if uint64(len(resp.Messages)) > req.GetPaginationLimit() {
		return Page{}, fmt.Errorf("%d messages, limit %d", len(resp.Messages), req.GetPaginationLimit())
	}
	var lookup map[[32]byte]bool
	if len(req.MessageHashes) > 0 {
		lookup = make(map[[32]byte]bool, len(req.MessageHashes))
		for _, h := range req.MessageHashes {
			lookup[[32]byte(h)] = true
		}
	}
	pubsubTopic, timeStart, timeEnd := req.GetPubsubTopic(), req.TimeStart, req.TimeEnd
	page := Page{Messages: make([]StoredMessage, 0, len(resp.Messages))}
	for i, kv := range resp.Messages {
		if len(kv.MessageHash) != 32 {
			return Page{}, fmt.Errorf("message %d: hash of %d bytes", i, len(kv.MessageHash))
		}
		sm := StoredMessage{Hash: [32]byte(kv.MessageHash)}
		if lookup != nil && !lookup[sm.Hash] {
			return Page{}, fmt.Errorf("message %d: %x was not looked up", i, sm.Hash)
		}
		if (kv.Message != nil) != (kv.PubsubTopic != nil) {
			return Page{}, fmt.Errorf("message %d: message and pubsub_topic must come together", i)
		}
		if kv.Message == nil {
			if req.IncludeData {
				return Page{}, fmt.Errorf("message %d (%x): no data although include_data was set", i, sm.Hash)
			}
			page.Messages = append(page.Messages, sm)
			continue
		}
		if n := proto.Size(kv.Message); n > MaxMessageSize {
			return Page{}, fmt.Errorf("message %d: %d bytes, limit %d", i, n, MaxMessageSize)
		}
		m := rpc.ToWire(kv.Message)
		topic := kv.GetPubsubTopic()
		if got := wakuwire.Hash(topic, m); got != sm.Hash {
			return Page{}, fmt.Errorf("message %d: listed under hash %x, but the message hashes to %x", i, sm.Hash, got)
		}
		switch {
		case pubsubTopic != "" && topic != pubsubTopic:
			return Page{}, fmt.Errorf("message %d (%x): pubsub topic %q, asked for %q", i, sm.Hash, topic, pubsubTopic)
		case len(req.ContentTopics) > 0 && !slices.Contains(req.ContentTopics, m.ContentTopic):
			return Page{}, fmt.Errorf("message %d (%x): content topic %q not asked for", i, sm.Hash, m.ContentTopic)
		case timeStart != nil && m.Timestamp < *timeStart, timeEnd != nil && m.Timestamp > *timeEnd:
			return Page{}, fmt.Errorf("message %d (%x): timestamp %d outside the time range", i, sm.Hash, m.Timestamp)
		}
		if i > 0 && page.Messages[i-1].Message != nil {
			prev := page.Messages[i-1]
			if c := CompareKeys(prev.Message.Timestamp, prev.Hash, m.Timestamp, sm.Hash); c >= 0 {
				return Page{}, fmt.Errorf("message %d (%x): not after the message before it (pages are oldest first)", i, sm.Hash)
			}
		}
		sm.PubsubTopic, sm.Message = topic, m
		page.Messages = append(page.Messages, sm)
	}
	if resp.PaginationCursor != nil {
		if len(page.Messages) == 0 {
			return Page{}, errors.New("a cursor on an empty page")
		}
		last := page.Messages[len(page.Messages)-1].Hash
		if !req.PaginationForward {
			last = page.Messages[0].Hash
		}
		if !bytes.Equal(resp.PaginationCursor, last[:]) {
			return Page{}, fmt.Errorf("cursor %x is not the hash of the page's last message in paging order (%x)", resp.PaginationCursor, last)
		}
		if req.PaginationCursor != nil && bytes.Equal(resp.PaginationCursor, req.PaginationCursor) {
			return Page{}, errors.New("the cursor sent back is the one asked with")
		}
		page.Cursor = resp.PaginationCursor
	}
	return page, nil
}

// CompareKeys orders stored messages as RFC 13 "Waku message sorting" and
// nwaku (queue_driver/index.nim cmp; postgres ORDER BY timestamp,
// messageHash) do: by timestamp, then by hash bytes.
func CompareKeys(ts1 int64, h1 [32]byte, ts2 int64, h2 [32]byte) int {
	if ts1 != ts2 {
		if ts1 < ts2 {
			return -1
		}
		return 1
	}
	return bytes.Compare(h1[:], h2[:])
}

// QueryAll runs q page by page, following the cursors until a page comes
// without one, calling page for each (an error from it stops the query and
// is returned). It returns the number of pages received. A cursor that
// comes back a second time (a store that would keep us paging in a circle)
// wraps ErrResponse; each page is checked as in Query, so every page moves
// past the one before. ctx bounds the whole query, DefaultTimeout each
// page.
func (c Client) QueryAll(ctx context.Context, node peer.AddrInfo, q Query, page func(Page) error) (pages int, err error) {
	seen := map[string]bool{}
	if q.Cursor != nil {
		seen[string(q.Cursor)] = true
	}
	for {
		pg, err := c.Query(ctx, node, q)
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
			return pages, fmt.Errorf("%w: cursor %x repeated on page %d", ErrResponse, pg.Cursor, pages)
		}
		seen[string(pg.Cursor)] = true
		q.Cursor = pg.Cursor
	}
}
