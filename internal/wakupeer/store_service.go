package wakupeer

import (
	"bufio"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/archivefleet/archivefleet/internal/wakuwire"
	"github.com/libp2p/go-libp2p/core/network"
)

const (
	// DefaultStoreRetention is how long Status store nodes keep messages
	// (about 30 days, spec waku-edge.md §2).
	DefaultStoreRetention = 30 * 24 * time.Hour
	// DefaultStoreCapacity caps the messages kept in memory.
	DefaultStoreCapacity = 1_000_000
	// DefaultStoreMaxBytes caps the memory the messages take, counted as
	// storeEntryBytes each: a million messages of up to 1 MiB would
	// otherwise be a terabyte. nwaku bounds its archive the same three ways
	// (retention policies time, capacity and size).
	DefaultStoreMaxBytes = 256 << 20
	// storeEntryFixedBytes is what a stored message costs besides its
	// encoding and content topic: the entry (hash, topics, timestamp,
	// slice), its map slot and its place in the order, rounded up.
	storeEntryFixedBytes = 256
	// storePruneInterval: expired messages are also dropped on this
	// period, so memory is released without queries or new messages.
	storePruneInterval = time.Minute
	// storeTimestampVariance: a message whose timestamp is further than
	// this from our clock when it arrives is not stored (nwaku
	// waku_archive/archive.nim MaxMessageTimestampVariance, 20 s; RFC 13
	// "Waku Message Store Eligibility"). It keeps a peer from planting
	// messages dated far in the future, which would outlive everything
	// else, and it leaves out messages without a timestamp.
	storeTimestampVariance = 20 * time.Second
	// storeIdleTimeout bounds the wait for a request on an incoming
	// stream. It is long because js-waku opens a store stream to every
	// store peer ahead of use and leaves it silent until its next query
	// (@waku/core stream_manager.js prepareStream): a stream reset sooner
	// makes that query fail with "stream reset". nwaku's handler has no
	// such timeout at all.
	storeIdleTimeout = 5 * time.Minute
	// maxStoreServedResponse: a page stops short of the limit (with a
	// cursor) rather than grow past this, because js-waku reads responses
	// with it-length-prefixed's default maxDataLength of 4 MiB
	// (it-length-prefixed 9 decode.js MAX_DATA_LENGTH). A page always holds
	// at least one message. RFC 13 lets a node return fewer messages than
	// the limit; nwaku does not cap by size.
	maxStoreServedResponse = 4<<20 - 64<<10
)

// messageStore is the store behind Config.StoreService: MEMORY ONLY, for
// tests and a local dev node, not a production store node (nothing
// survives a restart, and every message is held in memory, up to
// maxBytes). It keeps every valid message
// relayed on the peer's pubsub topics, its own publications included, that
// RFC 13 and nwaku would store: not ephemeral, timestamp within
// storeTimestampVariance of our clock on arrival. Messages are keyed by
// their 14/WAKU2-MESSAGE hash (a duplicate is stored once) and ordered by
// (timestamp, hash). It is bounded by retention (messages whose timestamp
// is older are dropped), by capacity and by maxBytes, the sum of the
// entries' cost (storeEntryBytes): beyond either the oldest are dropped,
// and a message that would be the first to go is not added (nwaku
// queue_driver.nim add). A message costs at most 2 MiB + 256 bytes: relay
// delivers nothing over MaxWakuMessageSize, and one costing more than
// maxBytes is never stored.
type messageStore struct {
	retention time.Duration
	capacity  int
	maxBytes  int64
	now       func() time.Time // time.Now; tests replace it
	metrics   *Metrics

	mu     sync.RWMutex
	bytes  int64 // sum of the entries' cost
	byHash map[[32]byte]*storedEntry
	// order is every entry, ascending by (timestamp, hash). Evictions
	// re-slice from the front; appends reallocate now and then, which also
	// releases the front.
	order []*storedEntry
}

type storedEntry struct {
	hash         [32]byte
	pubsubTopic  string
	contentTopic string
	timestamp    int64
	// raw is the message as we encoded it on arrival (not the pointer
	// subscribers share, which they could change).
	raw  []byte
	cost int64 // storeEntryBytes
}

// storeEntryBytes is what a message is counted as against maxBytes: its
// encoding, its content topic (held apart) and storeEntryFixedBytes.
func storeEntryBytes(raw []byte, contentTopic string) int64 {
	return int64(len(raw)+len(contentTopic)) + storeEntryFixedBytes
}

// newMessageStore returns the store for cfg (defaulted), or nil when
// cfg.StoreService is off; a nil store ignores add. metrics may be nil.
func newMessageStore(cfg Config, metrics *Metrics) *messageStore {
	if !cfg.StoreService {
		return nil
	}
	return &messageStore{
		retention: cfg.StoreRetention,
		capacity:  cfg.StoreCapacity,
		maxBytes:  cfg.StoreMaxBytes,
		now:       time.Now,
		metrics:   metrics,
		byHash:    map[[32]byte]*storedEntry{},
	}
}

func (e *storedEntry) cmp(ts int64, hash [32]byte) int {
	return cmpStoreKey(e.timestamp, e.hash, ts, hash)
}

// Reasons a message is not stored (waku_store_skipped_total's label).
const (
	skipEphemeral = "ephemeral"
	skipTimestamp = "timestamp" // more than storeTimestampVariance from our clock
	skipRetention = "retention"
	skipDuplicate = "duplicate"
	skipFull      = "full" // it would be the first to go, or alone exceeds maxBytes
)

// add stores m, relayed on pubsubTopic, if it is eligible and new; it
// reports whether it did.
func (s *messageStore) add(pubsubTopic string, m *wakuwire.Message) bool {
	if s == nil {
		return false
	}
	if reason := s.insert(pubsubTopic, m); reason != "" {
		s.metrics.storeSkipped(reason)
		return false
	}
	return true
}

// insert is add's work: "" when m is stored, else why it is not.
func (s *messageStore) insert(pubsubTopic string, m *wakuwire.Message) string {
	if m.Ephemeral {
		return skipEphemeral
	}
	now := s.now()
	if d := time.Duration(m.Timestamp - now.UnixNano()); d > storeTimestampVariance || d < -storeTimestampVariance {
		return skipTimestamp
	}
	e := &storedEntry{
		hash: wakuwire.Hash(pubsubTopic, m), pubsubTopic: pubsubTopic, contentTopic: m.ContentTopic,
		timestamp: m.Timestamp, raw: m.Marshal(),
	}
	e.cost = storeEntryBytes(e.raw, e.contentTopic)
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
	s.metrics.setStore(len(s.order), s.bytes)
	return ""
}

// prune drops the messages older than the retention; s.mu is held.
func (s *messageStore) prune(now time.Time) {
	cutoff := now.Add(-s.retention).UnixNano()
	n := sort.Search(len(s.order), func(i int) bool { return s.order[i].timestamp >= cutoff })
	s.evict(n, "retention")
}

// pruneNow prunes under the lock (the periodic prune).
func (s *messageStore) pruneNow() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prune(s.now())
}

// evict drops the n oldest messages, counted under reason; s.mu is held.
func (s *messageStore) evict(n int, reason string) {
	if n == 0 {
		return
	}
	for i := range n {
		delete(s.byHash, s.order[i].hash)
		s.bytes -= s.order[i].cost
		s.order[i] = nil
	}
	s.order = s.order[n:]
	s.metrics.storeEvicted(reason, n)
	s.metrics.setStore(len(s.order), s.bytes)
}

// len is the number of messages kept (expired ones not yet pruned count).
func (s *messageStore) len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.order)
}

// size is the sum of the kept messages' cost (storeEntryBytes).
func (s *messageStore) size() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.bytes
}

// handleStore serves Store v3 (Config.StoreService) from the peer's
// messageStore: one uvarint length-prefixed request, one response, as
// nwaku's handler (waku_store/protocol.nim) does.
func (p *Peer) handleStore(s network.Stream) {
	defer s.Close()
	remote := s.Conn().RemotePeer()
	_ = s.SetReadDeadline(time.Now().Add(storeIdleTimeout))
	b, err := readFrame(bufio.NewReader(s), maxStoreRequest)
	var resp storeResponse
	switch {
	case errors.Is(err, errFrameTooLarge):
		resp = storeResponse{StatusCode: StoreBadRequest, Desc: "bad request: " + err.Error()}
	case err != nil:
		p.log.Debug("store request unreadable", "from", remote, "err", err)
		_ = s.Reset()
		return
	default:
		resp = p.store.serve(b)
	}
	p.log.Debug("store query served", "from", remote, "request_id", resp.RequestID, "status", resp.StatusCode, "messages", len(resp.Messages))
	_ = s.SetWriteDeadline(time.Now().Add(DefaultStoreTimeout))
	if err := writeDelimited(s, resp.marshal()); err != nil {
		p.log.Debug("store response not written", "from", remote, "err", err)
		_ = s.Reset()
	}
}

func badStoreRequest(id, format string, args ...any) storeResponse {
	return storeResponse{RequestID: id, StatusCode: StoreBadRequest, Desc: "bad request: " + fmt.Sprintf(format, args...)}
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
// cursor, too many content topics, unknown cursor); see StoreBadResponse.
func (s *messageStore) serve(b []byte) storeResponse {
	var req storeRequest
	if err := req.unmarshal(b); err != nil {
		return badStoreRequest(req.RequestID, "decoding failed: %v", err)
	}
	id := req.RequestID
	filtered := req.PubsubTopic != "" || len(req.ContentTopics) > 0 || req.HasTimeStart || req.HasTimeEnd
	switch {
	case req.sawWrongLength:
		return badStoreRequest(id, "message hashes are 32 bytes")
	case req.HasCursor && len(req.Cursor) != 32:
		return badStoreRequest(id, "invalid cursor hash length: %d", len(req.Cursor))
	case req.HasCursor && [32]byte(req.Cursor) == [32]byte{}:
		return badStoreRequest(id, "all zeroes cursor hash")
	case len(req.Hashes) > 0 && filtered:
		return badStoreRequest(id, "a message hash lookup cannot have content filter criteria")
	case len(req.ContentTopics) > 0 && req.PubsubTopic == "":
		return badStoreRequest(id, "content topics need a pubsub topic")
	case len(req.ContentTopics) > MaxStoreContentTopics:
		return badStoreRequest(id, "too many content topics: %d, at most %d", len(req.ContentTopics), MaxStoreContentTopics)
	}
	limit := req.Limit
	switch {
	case limit == 0:
		limit = DefaultStorePageSize
	case limit > MaxStorePageSize:
		limit = MaxStorePageSize
	}
	if s == nil {
		return storeResponse{RequestID: id, StatusCode: StoreServiceUnavailable, Desc: "store not enabled"}
	}

	now := s.now()
	s.mu.Lock()
	s.prune(now)
	s.mu.Unlock()
	s.mu.RLock()
	defer s.mu.RUnlock()

	var cur *storedEntry
	if req.HasCursor {
		if cur = s.byHash[[32]byte(req.Cursor)]; cur == nil {
			return badStoreRequest(id, "cursor not found")
		}
	}
	list := s.order
	if len(req.Hashes) > 0 {
		list = make([]*storedEntry, 0, min(len(req.Hashes), len(s.order)))
		seen := map[[32]byte]bool{}
		for _, h := range req.Hashes {
			if e := s.byHash[[32]byte(h)]; e != nil && !seen[e.hash] {
				seen[e.hash] = true
				list = append(list, e)
			}
		}
		slices.SortFunc(list, func(a, b *storedEntry) int { return a.cmp(b.timestamp, b.hash) })
	}
	match := func(e *storedEntry) bool {
		return (req.PubsubTopic == "" || e.pubsubTopic == req.PubsubTopic) &&
			(len(req.ContentTopics) == 0 || slices.Contains(req.ContentTopics, e.contentTopic))
	}

	// The walk: forward from just after the cursor or the start time,
	// backward from just before the cursor or the end time, until the
	// other end of the time range.
	var out []*storedEntry
	more := false
	size := 0
	take := func(e *storedEntry) bool {
		if !match(e) {
			return true
		}
		n := 48 // the hash with its tags and lengths
		if req.IncludeData {
			n += len(e.raw) + len(e.pubsubTopic)
		}
		if uint64(len(out)) == limit || (len(out) > 0 && size+n > maxStoreServedResponse) {
			more = true
			return false
		}
		out = append(out, e)
		size += n
		return true
	}
	if req.Forward {
		i := 0
		if cur != nil {
			i = sort.Search(len(list), func(j int) bool { return list[j].cmp(cur.timestamp, cur.hash) > 0 })
		}
		if req.HasTimeStart {
			i = max(i, sort.Search(len(list), func(j int) bool { return list[j].timestamp >= req.TimeStart }))
		}
		for ; i < len(list); i++ {
			if req.HasTimeEnd && list[i].timestamp > req.TimeEnd {
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
		if req.HasTimeEnd {
			i = min(i, sort.Search(len(list), func(j int) bool { return list[j].timestamp > req.TimeEnd })-1)
		}
		for ; i >= 0; i-- {
			if req.HasTimeStart && list[i].timestamp < req.TimeStart {
				break
			}
			if !take(list[i]) {
				break
			}
		}
	}

	resp := storeResponse{RequestID: id, StatusCode: StoreSuccess, Desc: "OK", Messages: make([]storeKeyValue, len(out))}
	if more {
		last := out[len(out)-1].hash
		resp.Cursor, resp.HasCursor = last[:], true
	}
	if !req.Forward {
		slices.Reverse(out)
	}
	for i, e := range out {
		kv := storeKeyValue{Hash: e.hash[:]}
		if req.IncludeData {
			kv.Message, kv.HasMessage, kv.PubsubTopic, kv.HasTopic = e.raw, true, e.pubsubTopic, true
		}
		resp.Messages[i] = kv
	}
	return resp
}
