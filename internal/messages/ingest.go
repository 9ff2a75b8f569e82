package messages

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
)

// Ingest limits: each is a bound on what one request can cost, whatever it
// holds.
const (
	// MaxReportedMessages bounds the per-message entries of a reply; the
	// counts always cover every message, and Omitted says how many entries
	// were left out.
	MaxReportedMessages = 1000
	// maxReasonBytes bounds one entry's reason (an error may quote input).
	maxReasonBytes = 300
	// MaxFutureSkew is how far ahead of the fleet's clock a message may be
	// stamped. Later ones are refused (code "future"): a record stamped
	// years ahead would sit in MESSAGES, never archived, never pruned.
	MaxFutureSkew = 5 * time.Minute
	// chunkMessages and chunkBytes bound one chunk of a batch: decoded,
	// checked and published together, then dropped before the next.
	chunkMessages = 1000
	chunkBytes    = 1 << 20
	// smallMessage is the largest message the base lease covers; a larger
	// one grows the request's lease for its time.
	smallMessage = 256 << 10
	// finishTimeout bounds storing the messages already read when a
	// request ends early.
	finishTimeout = 10 * time.Second
)

// Outcome is what ingest did with one message.
type Outcome string

// Ingest outcomes. Stored and Late messages are kept and will be archived;
// Duplicate ones were kept before; Refused ones are not kept and never will
// be; Failed ones were not kept because of an outage and may be sent again;
// Conflict ones carry the hash of a stored message with other content: the
// stored one stays, this one is kept aside as evidence for the operator
// (stream MESSAGE_CONFLICTS, archivectl conflicts).
const (
	Stored    Outcome = "stored"
	Duplicate Outcome = "duplicate"
	Late      Outcome = "late"
	Refused   Outcome = "refused"
	Failed    Outcome = "failed"
	Conflict  Outcome = "conflict"
)

// Codes name why a message got the outcome in its entry, for clients to
// act on without parsing the reason.
const (
	CodeInvalid     = "invalid"     // does not decode, or a member would drop it
	CodeOversize    = "oversize"    // payload+sig over the archive cap
	CodeHash        = "hash"        // hash over MaxHashBytes
	CodeTopic       = "topic"       // not one of the community's topics
	CodeEarly       = "early"       // before the community's archives start
	CodeFuture      = "future"      // stamped more than MaxFutureSkew ahead
	CodeLate        = "late"        // its window is built: goes into a supplement
	CodeConflict    = "conflict"    // its hash is stored with other content
	CodeUnavailable = "unavailable" // not stored for an outage: send it again
)

// IngestResult counts every message of a batch by outcome and says why for
// each one not plainly stored (up to MaxReportedMessages of them).
type IngestResult struct {
	Stored     int `json:"stored"`
	Duplicates int `json:"duplicates"`
	// Late messages fall in a window already archived: they are stored and
	// go into a supplement archive at the community's next build.
	Late      int `json:"late"`
	Refused   int `json:"refused"`
	Failed    int `json:"failed"`
	Conflicts int `json:"conflicts"`
	// Messages lists the late, refused, failed and conflicting messages, in
	// batch order, at most MaxReportedMessages.
	Messages []MessageResult `json:"messages,omitempty"`
	// Omitted counts the entries left out of Messages.
	Omitted int `json:"omitted,omitempty"`
	// Error, when set, says why the batch was not read to its end: the
	// counts cover the messages before that point, and the rest were not
	// read (send them again; stored ones come back as duplicates).
	Error string `json:"error,omitempty"`
}

// MessageResult is the outcome of one message of a batch.
type MessageResult struct {
	Index   int     `json:"index"` // position in the batch, from 0
	Hash    string  `json:"hash,omitempty"`
	Outcome Outcome `json:"outcome"`
	Code    string  `json:"code"`
	Reason  string  `json:"reason"`
}

// Total is the number of messages the result accounts for.
func (r *IngestResult) Total() int {
	return r.Stored + r.Duplicates + r.Late + r.Refused + r.Failed + r.Conflicts
}

func (r *IngestResult) count(o Outcome) {
	switch o {
	case Stored:
		r.Stored++
	case Duplicate:
		r.Duplicates++
	case Late:
		r.Late++
	case Refused:
		r.Refused++
	case Failed:
		r.Failed++
	case Conflict:
		r.Conflicts++
	}
}

// entries collects one chunk's outcomes; flush moves them into a result,
// in batch order, within MaxReportedMessages.
type entries struct {
	res  *IngestResult
	list []MessageResult
}

func (e *entries) add(o Outcome, i int, hash []byte, code, reason string) {
	e.res.count(o)
	if code == "" {
		return
	}
	if e.full() {
		e.res.Omitted++
		return
	}
	mr := MessageResult{Index: i, Outcome: o, Code: code, Reason: truncate(reason, maxReasonBytes)}
	if len(hash) > 0 && len(hash) <= MaxHashBytes {
		mr.Hash = archive.HexBytes(hash).String()
	}
	e.list = append(e.list, mr)
}

// full tells whether no more entries will be reported.
func (e *entries) full() bool { return len(e.res.Messages)+len(e.list) >= MaxReportedMessages }

func (e *entries) flush() {
	slices.SortFunc(e.list, func(a, b MessageResult) int { return cmp.Compare(a.Index, b.Index) })
	e.res.Messages = append(e.res.Messages, e.list...)
	e.list = e.list[:0]
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// Metrics counts ingest outcomes.
type Metrics struct {
	messages  *prometheus.CounterVec
	busy      prometheus.Counter
	evidence  *prometheus.CounterVec
	requests  *prometheus.CounterVec
	inflight  prometheus.Gauge
	leaseSize prometheus.Histogram
}

// NewMetrics registers the ingest metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_ingest_messages_total",
			Help: "Messages offered to ingest, by outcome (stored, duplicate, late, refused, failed, conflict)."}, []string{"outcome"}),
		busy: prometheus.NewCounter(prometheus.CounterOpts{Name: "archivefleet_ingest_busy_total",
			Help: "Ingest requests refused or cut short because the ingest memory budget stayed exhausted."}),
		evidence: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_ingest_conflict_evidence_total",
			Help: "Conflicting records kept aside in MESSAGE_CONFLICTS, by result (kept, failed)."}, []string{"result"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_ingest_requests_total",
			Help: "Ingest requests by transport (http, nats) and status (ok, partial, busy, bad_request, unauthorized, too_large, timeout, error)."},
			[]string{"transport", "status"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "archivefleet_ingest_requests_in_flight",
			Help: "Ingest requests being read and stored."}),
	}
	reg.MustRegister(m.messages, m.busy, m.evidence, m.requests, m.inflight)
	for _, o := range []Outcome{Stored, Duplicate, Late, Refused, Failed, Conflict} {
		m.messages.WithLabelValues(string(o))
	}
	return m
}

// Item is one decoded message of a batch, or why it could not be decoded.
type Item struct {
	Msg archive.Message
	Err error
}

func (s *Store) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Store) budget() *Budget {
	s.budgetOnce.Do(func() {
		if s.Budget == nil {
			s.Budget, _ = NewBudget(DefaultIngestMemory, DefaultIngestWait)
		}
	})
	return s.Budget
}

// Ingest stores messages of community c (the fleet's own callers: the Waku
// edge, the demo). The error is for the batch as a whole: an unregistered
// community (registry.ErrNotFound) or a failed look-up; then nothing was
// stored.
func (s *Store) Ingest(ctx context.Context, c archive.CommunityID, msgs []archive.Message) (IngestResult, error) {
	var res IngestResult
	com, err := s.communities().Get(ctx, c)
	if err != nil {
		return res, err
	}
	e := &entries{res: &res}
	for start := 0; start < len(msgs); start += chunkMessages {
		part := msgs[start:min(start+chunkMessages, len(msgs))]
		items := make([]indexed, len(part))
		for i := range part {
			items[i] = indexed{msg: part[i], index: start + i}
		}
		if err := s.ingestChunk(ctx, c, com, items, "fleet", e); err != nil {
			return res, err
		}
	}
	s.record(&res, "")
	return res, nil
}

// IngestBatch reads a batch (a JSON array of messages or JSON lines, at most
// limit bytes) from r and stores its valid messages for community c, chunk
// by chunk: memory holds one chunk, or one large message, never the batch.
// Invalid messages are refused, each with its reason; a message whose
// window is already archived is stored as Late. lease is the request's
// share of the ingest budget (Budget().Acquire); a message too large for
// what the budget can give within its wait ends the read with ErrBusy.
//
// The error is for the batch: an unregistered community
// (registry.ErrNotFound) or a failed look-up before anything was read; or,
// with the result of the messages before it, why the read stopped
// (ErrMalformedBatch, ErrBatchTooLarge, ErrBusy, the reader's error).
func (s *Store) IngestBatch(ctx context.Context, c archive.CommunityID, r io.Reader, limit int64, lease *Lease, source string) (IngestResult, error) {
	var res IngestResult
	com, err := s.communities().Get(ctx, c)
	if err != nil {
		return res, err
	}
	br := NewBatchReader(r, limit, func(n int64) error {
		if n <= smallMessage {
			return nil
		}
		return lease.Grow(ctx, maxLeaseFor(n))
	})
	e := &entries{res: &res}
	var chunk []indexed
	size := 0
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		fctx := ctx
		if ctx.Err() != nil {
			// The read ended the request (a client gone or too slow, a
			// shut-down): what was read is stored all the same, briefly.
			var cancel context.CancelFunc
			fctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
			defer cancel()
		}
		err := s.ingestChunk(fctx, c, com, chunk, source, e)
		clear(chunk)
		chunk, size = chunk[:0], 0
		lease.Shrink()
		return err
	}
	for {
		raw, err := br.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if ferr := flush(); ferr != nil {
				err = ferr
			}
			res.Error = fmt.Sprintf("stopped after %d messages: %v", res.Total(), err)
			s.record(&res, source)
			return res, err
		}
		if len(raw) > chunkBytes {
			if err := flush(); err != nil {
				return res, err
			}
		}
		m, perr := archive.ParseMessageJSON(raw)
		chunk = append(chunk, indexed{msg: m, parseErr: perr, index: br.Index() - 1, line: br.Line()})
		size += len(raw)
		if len(chunk) >= chunkMessages || size >= chunkBytes {
			if err := flush(); err != nil {
				return res, err
			}
		}
	}
	if err := flush(); err != nil {
		return res, err
	}
	s.record(&res, source)
	return res, nil
}

// record counts a result in the metrics and logs what was not stored.
func (s *Store) record(res *IngestResult, source string) {
	if s.Metrics != nil {
		for o, n := range map[Outcome]int{Stored: res.Stored, Duplicate: res.Duplicates, Late: res.Late,
			Refused: res.Refused, Failed: res.Failed, Conflict: res.Conflicts} {
			s.Metrics.messages.WithLabelValues(string(o)).Add(float64(n))
		}
	}
	if res.Refused+res.Failed+res.Conflicts > 0 {
		first := ""
		if i := slices.IndexFunc(res.Messages, func(r MessageResult) bool { return r.Outcome != Late }); i >= 0 {
			first = res.Messages[i].Reason
		}
		s.log().Warn("ingest refused, failed or found conflicts for some messages; the reply names each", "source", source,
			"stored", res.Stored, "late", res.Late, "duplicates", res.Duplicates, "refused", res.Refused,
			"failed", res.Failed, "conflicts", res.Conflicts, "first_reason", first)
	}
}

// indexed is a message of a batch, or why it did not parse, with its
// position.
type indexed struct {
	msg      archive.Message
	parseErr error
	index    int
	line     int // in JSON lines; 0 in an array
}

// ingestChunk checks and stores one chunk, adding each message's outcome to
// e. Messages go to their buckets (dedup.go) in parallel, one chain of
// writes per bucket. An error (the community's state could not be read)
// leaves the chunk unstored, counted as failed.
func (s *Store) ingestChunk(ctx context.Context, c archive.CommunityID, com *registry.Community, items []indexed, source string, e *entries) error {
	defer e.flush()
	st, _, err := (&state.Store{KV: s.Bus.State}).GetBuild(ctx, c.String())
	if err != nil {
		for _, it := range items {
			e.add(Failed, it.index, it.msg.Hash, CodeUnavailable, fmt.Sprintf("not stored: read community state: %v; send it again", err))
		}
		return nil
	}
	archivedTo := com.NextStart(st.LastEnd)
	now := uint64(s.now().Unix())
	results := make([]outcome, len(items))
	groups := map[bucketKey][]int{}
	var order []bucketKey
	for i := range items {
		it := &items[i]
		if code := refusal(com, it, now); code != "" {
			if !e.full() {
				e.add(Refused, it.index, it.msg.Hash, code, explain(com, it, code, now))
			} else {
				e.add(Refused, it.index, nil, code, "")
			}
			continue
		}
		key := bucketKey{c: c.String(), day: it.msg.Timestamp / day}
		if groups[key] == nil {
			order = append(order, key)
		}
		groups[key] = append(groups[key], i)
	}
	sem := make(chan struct{}, writeChains)
	var wg sync.WaitGroup
	for _, key := range order {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			s.writeBucket(ctx, c, key, items, groups[key], results, source)
		})
	}
	wg.Wait()
	for i, r := range results {
		it := &items[i]
		switch {
		case r.o == "":
		case r.o == Stored && it.msg.Timestamp < archivedTo:
			e.add(Late, it.index, it.msg.Hash, CodeLate, fmt.Sprintf("its window (before %d) is already archived: it goes into a supplement archive at the next build", archivedTo))
		default:
			e.add(r.o, it.index, it.msg.Hash, r.code, r.reason)
		}
	}
	return nil
}

// refusal says why a message will never be archived for com, as a code;
// "" when it may be stored. explain gives the reason.
func refusal(com *registry.Community, it *indexed, now uint64) string {
	m := &it.msg
	switch {
	case it.parseErr != nil:
		return CodeInvalid
	case !m.Valid():
		if len(m.Sig) == 65 && m.Sig[0] == 0x04 && len(m.Hash) > 0 && m.Size() > archive.MaxMessageBytes {
			return CodeOversize
		}
		return CodeInvalid
	case len(m.Hash) > MaxHashBytes:
		return CodeHash
	case !slices.Contains(com.Topics, m.Topic):
		return CodeTopic
	case m.Timestamp < com.Since:
		return CodeEarly
	case m.Timestamp > now+uint64(MaxFutureSkew/time.Second):
		return CodeFuture
	}
	return ""
}

// explain is the reason for refusal's code, made only for the messages a
// reply names: a batch of millions of invalid messages explains a thousand.
func explain(com *registry.Community, it *indexed, code string, now uint64) string {
	m := &it.msg
	var r string
	switch code {
	case CodeInvalid, CodeOversize:
		if it.parseErr != nil {
			r = "decode message: " + it.parseErr.Error()
		} else {
			r = "message " + m.Hash.String() + ": " + m.Validate().Error()
		}
	case CodeHash:
		r = fmt.Sprintf("hash is %d bytes, over %d", len(m.Hash), MaxHashBytes)
	case CodeTopic:
		r = fmt.Sprintf("topic %s is not one of the community's topics", m.Topic)
	case CodeEarly:
		r = fmt.Sprintf("timestamp %d is before the community's archives start (since %d)", m.Timestamp, com.Since)
	case CodeFuture:
		r = fmt.Sprintf("future: timestamp %d is more than %v ahead of the fleet's clock (%d)", m.Timestamp, MaxFutureSkew, now)
	}
	return where(it.index, it.line) + ": " + r
}

// writeChains is how many buckets a chunk writes to at once.
const writeChains = 16

// outcome is one message's result from its bucket's chain.
type outcome struct {
	o            Outcome
	code, reason string
}

func failed(err error) outcome {
	return outcome{Failed, CodeUnavailable, fmt.Sprintf("not stored: %v; send it again", err)}
}

// pendingEntry is a message on its way into a record.
type pendingEntry struct {
	i int // in items
	entry
}

// writeBucket stores the messages of one bucket (items[i] for i in idx),
// each unless the bucket holds it already, new ones together in records of
// up to maxRecordBytes.
func (s *Store) writeBucket(ctx context.Context, c archive.CommunityID, key bucketKey, items []indexed, idx []int, results []outcome, source string) {
	d := s.dedup()
	bi := d.acquire(key)
	defer d.release(bi)
	bi.mu.Lock()
	defer bi.mu.Unlock()
	fail := func(err error) {
		for _, i := range idx {
			results[i] = failed(err)
		}
	}
	if !bi.loaded {
		if err := s.reloadBucket(ctx, bi); err != nil {
			fail(fmt.Errorf("read what the bucket holds: %w", err))
			return
		}
	}
	v2, err := s.hasV2(ctx, key.c, key.day)
	if err != nil {
		fail(fmt.Errorf("look for records of the earlier layout: %w", err))
		return
	}
	w := &bucketWrite{s: s, c: c, bi: bi, v2: v2, items: items, results: results, source: source, seen: map[string]int{}}
	for _, i := range idx {
		if err := ctx.Err(); err != nil {
			results[i] = failed(err)
			continue
		}
		w.add(ctx, i)
	}
	w.flush(ctx)
}

// bucketWrite gathers the new messages of a bucket into records.
type bucketWrite struct {
	s       *Store
	c       archive.CommunityID
	bi      *bucketIndex
	v2      bool
	items   []indexed
	results []outcome
	source  string
	pending []pendingEntry
	size    int
	seen    map[string]int // hash → item, of the messages pending
}

// add checks message items[i] against what the bucket holds and queues it
// for the next record when it is new.
func (w *bucketWrite) add(ctx context.Context, i int) {
	m := &w.items[i].msg
	if _, ok := w.seen[string(m.Hash)]; ok {
		// The same hash twice in one batch: the first is written now, and
		// this one checked against it as against any stored record.
		w.flush(ctx)
	}
	e, err := w.s.prepare(ctx, w.c, m)
	if err != nil {
		w.results[i] = failed(err)
		return
	}
	if o, found := w.check(ctx, m, &e); found {
		w.results[i] = o
		return
	}
	if w.size+e.size() > maxRecordBytes && len(w.pending) > 0 {
		w.flush(ctx)
	}
	w.pending = append(w.pending, pendingEntry{i: i, entry: e})
	w.size += e.size()
	w.seen[string(m.Hash)] = i
}

// check looks m up in what the bucket (and a day of the earlier layout)
// holds; found reports that it is there, with the outcome.
func (w *bucketWrite) check(ctx context.Context, m *archive.Message, e *entry) (outcome, bool) {
	if w.v2 {
		r, err := w.s.Bus.LeaderGet(ctx, bus.StreamMessages, bus.Get{LastFor: bus.SubjectMessagesLegacy(w.bi.key.c, w.bi.key.day) + "." + hex.EncodeToString(m.Hash)})
		if err != nil {
			return failed(err), true
		}
		if r != nil {
			return w.s.compareWith(ctx, w.c, m, e, &storedEntry{entry: entry{msg: r.Data, body: r.Header.Get(headerBody)}, seq: r.Seq}, w.source), true
		}
	}
	for _, seq := range w.bi.lookup(m.Hash) {
		se, err := w.s.findEntry(ctx, seq, m.Hash)
		if err != nil {
			return failed(err), true
		}
		if se == nil {
			w.bi.drop(m.Hash, seq) // pruned since, or another hash with the same key
			continue
		}
		return w.s.compareWith(ctx, w.c, m, e, se, w.source), true
	}
	return outcome{}, false
}

// flush writes the pending messages as one record, expecting the last
// sequence the index has seen: a record another writer added meanwhile is
// read, and the pending messages checked against it, before trying again.
func (w *bucketWrite) flush(ctx context.Context) {
	defer func() {
		w.pending, w.size = w.pending[:0], 0
		clear(w.seen)
	}()
	subject := daySubject(w.bi.key.c, w.bi.key.day)
	for attempt := 0; len(w.pending) > 0; attempt++ {
		if attempt == maxWriteAttempts {
			for _, p := range w.pending {
				w.results[p.i] = failed(errBucketMoving)
			}
			return
		}
		es := make([]entry, len(w.pending))
		for j, p := range w.pending {
			es[j] = p.entry
		}
		data, err := marshalRecord(es)
		if err != nil {
			for _, p := range w.pending {
				w.results[p.i] = failed(err)
			}
			return
		}
		ack, err := w.s.Bus.JS.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: data}, jetstream.WithExpectLastSequencePerSubject(w.bi.last))
		if err == nil {
			for _, p := range w.pending {
				w.bi.add(w.items[p.i].msg.Hash, ack.Sequence)
				w.results[p.i] = outcome{o: Stored}
			}
			return
		}
		actual, wrong := wrongLastSeq(err)
		switch {
		case wrong && actual < w.bi.last:
			err = w.s.reloadBucket(ctx, w.bi) // a prune emptied it
		case wrong:
			err = w.s.loadBucket(ctx, w.bi) // another writer moved it
		case bus.IsTransient(err):
			// The record may have been stored with its answer lost:
			// reading the bucket finds it, and the check below its
			// messages.
			if err = bus.Sleep(ctx, time.Duration(attempt+1)*20*time.Millisecond); err == nil {
				err = w.s.loadBucket(ctx, w.bi)
			}
		}
		if err != nil {
			for _, p := range w.pending {
				w.results[p.i] = failed(err)
			}
			return
		}
		left := w.pending[:0]
		for _, p := range w.pending {
			m := &w.items[p.i].msg
			if o, found := w.check(ctx, m, &p.entry); found {
				w.results[p.i] = o
				continue
			}
			left = append(left, p)
		}
		w.pending = left
	}
}

// prepare makes m's entry, first storing its payload object when it is
// large. The object is named by the payload's digest: two messages under
// one hash never share, or overwrite, each other's object.
func (s *Store) prepare(ctx context.Context, c archive.CommunityID, m *archive.Message) (entry, error) {
	rec := *m
	var body string
	if len(m.Payload) > InlinePayloadBytes {
		body = PayloadObject(c, m.Hash, m.Payload)
		err := bus.Retry(ctx, func(ctx context.Context) error {
			if _, err := s.Bus.Objects.GetInfo(ctx, body); err == nil {
				return nil
			} else if !errors.Is(err, jetstream.ErrObjectNotFound) {
				return err
			}
			_, err := s.Bus.Objects.PutBytes(ctx, body, m.Payload)
			return err
		})
		if err != nil {
			return entry{}, fmt.Errorf("store payload: %w", err)
		}
		rec.Payload = nil
	}
	data, err := rec.MarshalBinary()
	if err != nil {
		return entry{}, err
	}
	return entry{msg: data, body: body}, nil
}

// PayloadObject names the object holding a large payload: the community, the
// message hash and the payload's digest.
func PayloadObject(c archive.CommunityID, hash, payload []byte) string {
	d := sha256.Sum256(payload)
	return "messages/" + c.String() + "/" + hex.EncodeToString(hash) + "." + hex.EncodeToString(d[:16])
}

// compareWith compares message m (its entry e; nil when it is not
// prepared) with the stored entry of its hash: the same content is a
// Duplicate; other content a Conflict, kept aside as evidence. A
// comparison that fails is a Failed outcome: the client sends it again.
func (s *Store) compareWith(ctx context.Context, c archive.CommunityID, m *archive.Message, e *entry, stored *storedEntry, source string) outcome {
	if e == nil {
		pe, err := s.prepare(ctx, c, m)
		if err != nil {
			return failed(err)
		}
		e = &pe
	}
	same, err := s.sameContent(ctx, stored, e, m)
	if err != nil {
		return failed(fmt.Errorf("comparing with the stored record: %w", err))
	}
	if same {
		if e.body != "" && e.body != stored.body {
			s.dropObject(e.body) // the stored record names its own copy
		}
		return outcome{o: Duplicate}
	}
	s.keepEvidence(ctx, c, m, e, stored, source)
	return outcome{Conflict, CodeConflict, fmt.Sprintf("conflict: a message with this hash and other content was stored first (stream sequence %d); "+
		"it stays, and this one is kept aside for the operator (archivectl conflicts list)", stored.seq)}
}

// sameContent tells whether the stored entry holds m. Entries are
// deterministic protobuf with a large payload named by its digest, so equal
// bytes and names mean equal content; a payload object named by the hash
// alone (an earlier version) is read and compared.
func (s *Store) sameContent(ctx context.Context, stored *storedEntry, e *entry, m *archive.Message) (bool, error) {
	if !bytes.Equal(stored.msg, e.msg) {
		return false, nil
	}
	switch {
	case stored.body == e.body:
		return true, nil
	case stored.body == "" || e.body == "":
		return false, nil
	case strings.Contains(stored.body[strings.LastIndexByte(stored.body, '/')+1:], "."):
		return false, nil // both named by digest, and the digests differ
	}
	var payload bytes.Buffer
	_, err := bus.RetryValue(ctx, func(ctx context.Context) (int64, error) {
		payload.Reset()
		return s.Bus.ReadObject(ctx, stored.body, 0, &payload, nil)
	})
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return bytes.Equal(payload.Bytes(), m.Payload), nil
}
