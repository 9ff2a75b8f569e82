package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/archivefleet/archivefleet/internal/waku/rpc"
	"github.com/archivefleet/archivefleet/internal/waku/store/storepb"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
	"github.com/libp2p/go-libp2p/core/network"
	"google.golang.org/protobuf/proto"
)

const (
	// DefaultRetention is how long Status's store nodes keep messages
	// (about 30 days).
	DefaultRetention = 30 * 24 * time.Hour
	// DefaultCapacity caps the messages kept in memory.
	DefaultCapacity = 1_000_000
	// DefaultMaxBytes caps the memory the messages take, counted as
	// entryBytes each: a million messages of up to 1 MiB would otherwise
	// be a terabyte. nwaku bounds its archive the same three ways
	// (retention policies time, capacity and size).
	DefaultMaxBytes = 256 << 20
	// entryFixedBytes is what a stored message costs besides its encoding
	// and content topic: the entry (hash, topics, timestamp, slice), its
	// map slot and its place in the order, rounded up.
	entryFixedBytes = 256
	// pruneInterval: expired messages are also dropped on this period, so
	// memory is released without queries or new messages.
	pruneInterval = time.Minute
	// timestampVariance: a message whose timestamp is further than this
	// from our clock when it arrives is not stored (nwaku
	// waku_archive/archive.nim MaxMessageTimestampVariance, 20 s; RFC 13
	// "Waku Message Store Eligibility"). It keeps a peer from planting
	// messages dated far in the future, which would outlive everything
	// else, and it leaves out messages without a timestamp.
	timestampVariance = 20 * time.Second
	// idleTimeout bounds the wait for a request on an incoming stream. It
	// is long because js-waku opens a store stream to every store peer
	// ahead of use and leaves it silent until its next query (@waku/core
	// stream_manager.js prepareStream): a stream reset sooner makes that
	// query fail with "stream reset". nwaku's handler has no such timeout
	// at all.
	idleTimeout = 5 * time.Minute
	// maxServedResponse: a page stops short of the limit (with a cursor)
	// rather than grow past this, because js-waku reads responses with
	// it-length-prefixed's default maxDataLength of 4 MiB
	// (it-length-prefixed 9 decode.js MAX_DATA_LENGTH). A page always holds
	// at least one message. RFC 13 lets a node return fewer messages than
	// the limit; nwaku does not cap by size.
	maxServedResponse = 4<<20 - 64<<10
)

// ServiceConfig configures a Service; zero fields get the defaults.
type ServiceConfig struct {
	// Retention drops stored messages whose timestamp is older. Default
	// DefaultRetention.
	Retention time.Duration
	// Capacity caps the stored messages; beyond it the oldest go first.
	// Default DefaultCapacity.
	Capacity int
	// MaxBytes caps the memory the stored messages take, each counted as
	// its encoded size, its content topic and 256 bytes; beyond it the
	// oldest go first, and a message larger than it is not stored. Default
	// DefaultMaxBytes.
	MaxBytes int64
	// Metrics may be nil.
	Metrics *Metrics
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Service serves Store v3 from memory: MEMORY ONLY, for tests and a local
// dev node, not a production store node (nothing survives a restart, and
// every message is held in memory, up to MaxBytes). It keeps every valid
// message the node relays (Add), its own publications included, that RFC 13
// and nwaku would store: not ephemeral, timestamp within timestampVariance
// of our clock on arrival. Messages are keyed by their 14/WAKU2-MESSAGE
// hash (a duplicate is stored once) and ordered by (timestamp, hash). It is
// bounded by retention (messages whose timestamp is older are dropped), by
// capacity and by MaxBytes, the sum of the entries' cost (entryBytes):
// beyond either the oldest are dropped, and a message that would be the
// first to go is not added (nwaku queue_driver.nim add). A message costs at
// most 2 MiB + 256 bytes: relay delivers nothing over
// relay.MaxWakuMessageSize, and one costing more than MaxBytes is never
// stored. A nil *Service stores nothing.
type Service struct {
	retention time.Duration
	capacity  int
	maxBytes  int64
	now       func() time.Time // time.Now; tests replace it
	metrics   *Metrics
	log       *slog.Logger

	mu     sync.RWMutex
	bytes  int64 // sum of the entries' cost
	byHash map[[32]byte]*entry
	// order is every entry, ascending by (timestamp, hash). Evictions
	// re-slice from the front; appends reallocate now and then, which also
	// releases the front.
	order []*entry
}

type entry struct {
	hash        [32]byte
	pubsubTopic string
	timestamp   int64 // msg's, here for the searches
	// msg is our own copy of the message (not the one subscribers share,
	// which they could change); it is never changed.
	msg  *wakuwire.Message
	size int   // msg's encoded size
	cost int64 // entryBytes
}

// entryBytes is what a message of size bytes encoded is counted as against
// maxBytes: its encoding, its content topic again and entryFixedBytes. That
// is more than it takes (the copy holds the payload, meta and content
// topic, and its fields are among the fixed bytes).
func entryBytes(size int, contentTopic string) int64 {
	return int64(size+len(contentTopic)) + entryFixedBytes
}

// NewService returns an empty store.
func NewService(cfg ServiceConfig) *Service {
	s := &Service{
		retention: cfg.Retention,
		capacity:  cfg.Capacity,
		maxBytes:  cfg.MaxBytes,
		now:       time.Now,
		metrics:   cfg.Metrics,
		log:       cfg.Logger,
		byHash:    map[[32]byte]*entry{},
	}
	if s.retention == 0 {
		s.retention = DefaultRetention
	}
	if s.capacity == 0 {
		s.capacity = DefaultCapacity
	}
	if s.maxBytes == 0 {
		s.maxBytes = DefaultMaxBytes
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s
}

func (e *entry) cmp(ts int64, hash [32]byte) int {
	return CompareKeys(e.timestamp, e.hash, ts, hash)
}

// Reasons a message is not stored (waku_store_skipped_total's label).
const (
	skipEphemeral = "ephemeral"
	skipTimestamp = "timestamp" // more than timestampVariance from our clock
	skipRetention = "retention"
	skipDuplicate = "duplicate"
	skipFull      = "full" // it would be the first to go, or alone exceeds maxBytes
)

// Add stores m, relayed on pubsubTopic, if it is eligible and new; it
// reports whether it did.
func (s *Service) Add(pubsubTopic string, m *wakuwire.Message) bool {
	if s == nil {
		return false
	}
	if reason := s.insert(pubsubTopic, m); reason != "" {
		s.metrics.skipped(reason)
		return false
	}
	return true
}

// insert is Add's work: "" when m is stored, else why it is not.
func (s *Service) insert(pubsubTopic string, m *wakuwire.Message) string {
	if m.Ephemeral {
		return skipEphemeral
	}
	now := s.now()
	if d := time.Duration(m.Timestamp - now.UnixNano()); d > timestampVariance || d < -timestampVariance {
		return skipTimestamp
	}
	cp := *m
	cp.Payload, cp.Meta = bytes.Clone(m.Payload), bytes.Clone(m.Meta)
	e := &entry{hash: wakuwire.Hash(pubsubTopic, m), pubsubTopic: pubsubTopic, timestamp: m.Timestamp, msg: &cp,
		size: proto.Size(toProto(&cp))}
	e.cost = entryBytes(e.size, cp.ContentTopic)
	if e.cost > s.maxBytes {
		return skipFull
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prune(now)
	if e.timestamp < now.Add(-s.retention).UnixNano() {
		return skipRetention
	}
	if _, dup := s.byHash[e.hash]; dup {
		return skipDuplicate
	}
	// Make room from the oldest: overCount for capacity, then as many
	// more as the bytes need. If e would itself be among them (it is older
	// than what must go), it is not added and nothing is dropped.
	overCount := max(0, len(s.order)+1-s.capacity)
	n, freed := 0, int64(0)
	for n < overCount || s.bytes+e.cost-freed > s.maxBytes {
		if n == len(s.order) || s.order[n].cmp(e.timestamp, e.hash) > 0 {
			return skipFull
		}
		freed += s.order[n].cost
		n++
	}
	s.evict(overCount, "capacity")
	s.evict(n-overCount, "bytes")
	i := len(s.order)
	if i > 0 && s.order[i-1].cmp(e.timestamp, e.hash) > 0 {
		// Out of order (relay delivers roughly in time order): binary search.
		i = sort.Search(len(s.order), func(j int) bool { return s.order[j].cmp(e.timestamp, e.hash) > 0 })
	}
	s.order = slices.Insert(s.order, i, e)
	s.byHash[e.hash] = e
	s.bytes += e.cost
	s.metrics.setSize(len(s.order), s.bytes)
	return ""
}

// prune drops the messages older than the retention; s.mu is held.
func (s *Service) prune(now time.Time) {
	cutoff := now.Add(-s.retention).UnixNano()
	n := sort.Search(len(s.order), func(i int) bool { return s.order[i].timestamp >= cutoff })
	s.evict(n, "retention")
}

// pruneNow prunes under the lock (the periodic prune).
func (s *Service) pruneNow() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prune(s.now())
}

// Run drops the expired messages every minute until ctx ends.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(pruneInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.pruneNow()
		case <-ctx.Done():
			return
		}
	}
}

// evict drops the n oldest messages, counted under reason; s.mu is held.
func (s *Service) evict(n int, reason string) {
	if n == 0 {
		return
	}
	for i := range n {
		delete(s.byHash, s.order[i].hash)
		s.bytes -= s.order[i].cost
		s.order[i] = nil
	}
	s.order = s.order[n:]
	s.metrics.evicted(reason, n)
	s.metrics.setSize(len(s.order), s.bytes)
}

// Len is the number of messages kept (expired ones not yet pruned count).
func (s *Service) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.order)
}

// Size is the sum of the kept messages' cost against the byte budget.
func (s *Service) Size() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.bytes
}

// Has reports whether the message with this hash is kept.
func (s *Service) Has(hash [32]byte) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.byHash[hash] != nil
}

// Handle serves one Store v3 query on st: one uvarint length-prefixed
// request, one response, as nwaku's handler (waku_store/protocol.nim) does.
func (s *Service) Handle(st network.Stream) {
	defer st.Close()
	remote := st.Conn().RemotePeer()
	_ = st.SetReadDeadline(time.Now().Add(idleTimeout))
	b, err := rpc.ReadFrame(bufio.NewReader(st), MaxRequestSize)
	var resp *storepb.StoreQueryResponse
	switch {
	case errors.Is(err, rpc.ErrFrameTooLarge):
		resp = badRequest("", "%v", err)
	case err != nil:
		s.log.Debug("store request unreadable", "from", remote, "err", err)
		_ = st.Reset()
		return
	default:
		resp = s.serve(b)
	}
	s.log.Debug("store query served", "from", remote, "request_id", resp.RequestId, "status", resp.GetStatusCode(), "messages", len(resp.Messages))
	_ = st.SetWriteDeadline(time.Now().Add(DefaultTimeout))
	out, err := proto.Marshal(resp)
	if err == nil {
		err = rpc.WriteFrame(st, out)
	}
	if err != nil {
		s.log.Debug("store response not written", "from", remote, "err", err)
		_ = st.Reset()
	}
}

// answer is a response with a status and, if not empty, a description.
func answer(id string, code Status, desc string) *storepb.StoreQueryResponse {
	r := &storepb.StoreQueryResponse{RequestId: id, StatusCode: proto.Uint32(uint32(code))}
	if desc != "" {
		r.StatusDesc = proto.String(desc)
	}
	return r
}

func badRequest(id, format string, args ...any) *storepb.StoreQueryResponse {
	return answer(id, BadRequest, "bad request: "+fmt.Sprintf(format, args...))
}

// serve answers one encoded StoreQueryRequest with nwaku's semantics
// (waku_archive/archive.nim findMessages and the drivers' getMessages):
// matching is pubsub topic equal, content topic in the set, start <=
// timestamp <= end (both inclusive, as nwaku's SQL and queue drivers; RFC
// 13 makes the end exclusive), hash in the looked-up set; the cursor is
// exclusive and may be any stored message, matching or not; limit+1 rows
// are read to know whether to send a cursor, which is the hash of the last
// message included in paging order; pages are sent oldest first whichever
// the direction. It is stricter than nwaku where RFC 13 says a request is
// invalid (hashes together with content filter fields; content topics
// without a pubsub topic) and answers 400 where nwaku answers 300 (invalid
// cursor, too many content topics, unknown cursor); see BadResponse.
func (s *Service) serve(b []byte) *storepb.StoreQueryResponse {
	req, err := decodeRequest(b)
	if err != nil {
		return badRequest("", "decoding failed: %v", err)
	}
	id := req.RequestId
	pubsubTopic, cursor, timeStart, timeEnd := req.GetPubsubTopic(), req.PaginationCursor, req.TimeStart, req.TimeEnd
	filtered := pubsubTopic != "" || len(req.ContentTopics) > 0 || timeStart != nil || timeEnd != nil
	switch {
	case slices.ContainsFunc(req.MessageHashes, func(h []byte) bool { return len(h) != 32 }):
		return badRequest(id, "message hashes are 32 bytes")
	case cursor != nil && len(cursor) != 32:
		return badRequest(id, "invalid cursor hash length: %d", len(cursor))
	case cursor != nil && [32]byte(cursor) == [32]byte{}:
		return badRequest(id, "all zeroes cursor hash")
	case len(req.MessageHashes) > 0 && filtered:
		return badRequest(id, "a message hash lookup cannot have content filter criteria")
	case len(req.ContentTopics) > 0 && pubsubTopic == "":
		return badRequest(id, "content topics need a pubsub topic")
	case len(req.ContentTopics) > MaxContentTopics:
		return badRequest(id, "too many content topics: %d, at most %d", len(req.ContentTopics), MaxContentTopics)
	}
	limit := req.GetPaginationLimit()
	switch {
	case limit == 0:
		limit = DefaultPageSize
	case limit > MaxPageSize:
		limit = MaxPageSize
	}
	if s == nil {
		return answer(id, ServiceUnavailable, "store not enabled")
	}

	now := s.now()
	s.mu.Lock()
	s.prune(now)
	s.mu.Unlock()
	s.mu.RLock()
	defer s.mu.RUnlock()

	var cur *entry
	if cursor != nil {
		if cur = s.byHash[[32]byte(cursor)]; cur == nil {
			return badRequest(id, "cursor not found")
		}
	}
	list := s.order
	if len(req.MessageHashes) > 0 {
		list = make([]*entry, 0, min(len(req.MessageHashes), len(s.order)))
		seen := map[[32]byte]bool{}
		for _, h := range req.MessageHashes {
			if e := s.byHash[[32]byte(h)]; e != nil && !seen[e.hash] {
				seen[e.hash] = true
				list = append(list, e)
			}
		}
		slices.SortFunc(list, func(a, b *entry) int { return a.cmp(b.timestamp, b.hash) })
	}
	match := func(e *entry) bool {
		return (pubsubTopic == "" || e.pubsubTopic == pubsubTopic) &&
			(len(req.ContentTopics) == 0 || slices.Contains(req.ContentTopics, e.msg.ContentTopic))
	}

	// The walk: forward from just after the cursor or the start time,
	// backward from just before the cursor or the end time, until the
	// other end of the time range.
	var out []*entry
	more := false
	size := 0
	take := func(e *entry) bool {
		if !match(e) {
			return true
		}
		n := 48 // the hash with its tags and lengths
		if req.IncludeData {
			n += e.size + len(e.pubsubTopic)
		}
		if uint64(len(out)) == limit || (len(out) > 0 && size+n > maxServedResponse) {
			more = true
			return false
		}
		out = append(out, e)
		size += n
		return true
	}
	if req.PaginationForward {
		i := 0
		if cur != nil {
			i = sort.Search(len(list), func(j int) bool { return list[j].cmp(cur.timestamp, cur.hash) > 0 })
		}
		if timeStart != nil {
			i = max(i, sort.Search(len(list), func(j int) bool { return list[j].timestamp >= *timeStart }))
		}
		for ; i < len(list); i++ {
			if timeEnd != nil && list[i].timestamp > *timeEnd {
				break
			}
			if !take(list[i]) {
				break
			}
		}
	} else {
		i := len(list) - 1
		if cur != nil {
			i = sort.Search(len(list), func(j int) bool { return list[j].cmp(cur.timestamp, cur.hash) >= 0 }) - 1
		}
		if timeEnd != nil {
			i = min(i, sort.Search(len(list), func(j int) bool { return list[j].timestamp > *timeEnd })-1)
		}
		for ; i >= 0; i-- {
			if timeStart != nil && list[i].timestamp < *timeStart {
				break
			}
			if !take(list[i]) {
				break
			}
		}
	}

	resp := answer(id, Success, "OK")
	if more {
		last := out[len(out)-1].hash
		resp.PaginationCursor = last[:]
	}
	if !req.PaginationForward {
		slices.Reverse(out)
	}
	resp.Messages = make([]*storepb.WakuMessageKeyValue, len(out))
	for i, e := range out {
		kv := &storepb.WakuMessageKeyValue{MessageHash: e.hash[:]}
		if req.IncludeData {
			kv.Message, kv.PubsubTopic = toProto(e.msg), proto.String(e.pubsubTopic)
		}
		resp.Messages[i] = kv
	}
	return resp
}
