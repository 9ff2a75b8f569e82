// Package store keeps the Waku messages of every community, as status-go's
// control node keeps its waku_messages table, in the MESSAGES stream.
//
// Each message is one record on its own subject,
// msgs.<community>.<utc day>.<hash hex>, written only if that subject is
// empty, so a message sent again, however late, is a duplicate and never a
// second copy. Reading a time range touches only the days it spans. Records
// are status-go's protobuf WakuMessage (a JSON record written by earlier
// versions on msgs.<community>.<day> is still read); a message whose payload
// is over InlinePayloadBytes keeps its payload in the object store, so no
// record needs more than the NATS server's default max payload.
//
// Every record's stream sequence orders it against builds: a build reads the
// messages stored up to a watermark (the stream's last sequence when it
// started) and commits that watermark, and the next build finds the records
// stored after it whose window was already built — late messages — and
// archives them as supplements. Nothing accepted is left out.
package store

import (
	"bytes"
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/registry"
)

const day = 86400

// InlinePayloadBytes is the largest payload kept inside a stream record. A
// larger one goes to the object store (chunked there), so that messages up to
// the 30,000,000-byte archive cap fit a server with the default 1 MiB max
// payload.
const InlinePayloadBytes = 256 << 10

// asyncWindow is how many publishes ingest has in flight at most.
const asyncWindow = 1000

// MaxHashBytes bounds a message hash: it names the message's subject. Waku
// message hashes are 32 bytes.
const MaxHashBytes = 64

// Record headers.
const (
	headerTimestamp = "Archivefleet-Ts"   // the message timestamp, for scans that skip bodies
	headerBody      = "Archivefleet-Body" // object holding the payload when it is not inline
)

// Communities gives a registered community; registry.Registry is one.
type Communities interface {
	Get(ctx context.Context, id archive.CommunityID) (*registry.Community, error)
}

// Store ingests and reads messages.
type Store struct {
	Bus *bus.Bus
	// Communities looks up the community of an ingest; nil reads the
	// registry bucket of Bus. Unregistered communities are refused.
	Communities Communities
	Logger      *slog.Logger
	// Metrics is optional; see NewMetrics.
	Metrics *Metrics
	// Budget bounds the memory of ingest requests in flight; nil takes
	// one of DefaultIngestMemory on first use.
	Budget *Budget
	// Now is the clock ingest checks timestamps against; nil is time.Now.
	Now func() time.Time

	scanned    atomic.Uint64
	budgetOnce sync.Once
	stream     atomic.Pointer[jetstream.Stream]
}

// Scanned counts stored messages read back so far: a range read costs the
// messages of the days it spans, not the whole history.
func (s *Store) Scanned() uint64 { return s.scanned.Load() }

func isDuplicate(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Subject is where a message of community c is stored.
func Subject(c archive.CommunityID, timestamp uint64, hash []byte) string {
	return fmt.Sprintf("msgs.%s.%d.%s", c, timestamp/day, hex.EncodeToString(hash))
}

// daySubjects are the subjects of one day: this version's and the one
// record-per-day subject earlier versions wrote.
func daySubjects(c string, d uint64) []string {
	legacy := bus.SubjectMessagesLegacy(c, d)
	return []string{legacy, legacy + ".*"}
}

func (s *Store) communities() Communities {
	if s.Communities != nil {
		return s.Communities
	}
	return registry.New(s.Bus.Communities)
}

// Fence publishes community c's build fence, a record on msgs.<c>.fence, and
// returns its stream sequence: the build's watermark. A read up to a
// watermark goes on until it has seen that record (or a later one), so it
// gets every record stored before it even when the stream replica serving
// the read lags the leader — on a clustered stream an ordered consumer may
// sit on any replica, and its pending count is that replica's. Each fence
// rolls up the community's previous one.
//
// The publish is repeated over a cluster's transient errors: a repeat of a
// fence that was stored after all (its ack lost) stores one more fence,
// which rolls that one up, and the build's watermark is the later one —
// a read up to it sees everything the first would have, and a little more.
func (s *Store) Fence(ctx context.Context, c archive.CommunityID) (uint64, error) {
	ack, err := bus.RetryValue(ctx, func(ctx context.Context) (*jetstream.PubAck, error) {
		msg := nats.NewMsg(fenceSubject(c.String()))
		msg.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
		return s.Bus.JS.PublishMsg(ctx, msg)
	})
	if err != nil {
		return 0, fmt.Errorf("message stream fence: %w", err)
	}
	return ack.Sequence, nil
}

func fenceSubject(c string) string { return "msgs." + c + ".fence" }

// Source returns every stored message of community c.
func (s *Store) Source(c archive.CommunityID) archive.Source { return s.Between(c, 0, math.MaxUint64) }

// Between returns the messages of community c whose records have a stream
// sequence in (after, upto].
func (s *Store) Between(c archive.CommunityID, after, upto uint64) archive.Source {
	return &source{s: s, c: c.String(), after: after, upto: upto}
}

type source struct {
	s           *Store
	c           string
	after, upto uint64
}

// Messages reads the days [from, to) spans one at a time, keeps messages
// inside the range, drops duplicates by hash and yields them ordered by
// (timestamp, hash). A message's day subject follows from its timestamp, so
// sorting day by day gives the global order while memory holds one day of
// one community at most.
func (src *source) Messages(ctx context.Context, from, to uint64) iter.Seq2[archive.Message, error] {
	return func(yield func(archive.Message, error) bool) {
		if from >= to {
			return
		}
		for d := from / day; d <= (to-1)/day; d++ {
			var msgs []archive.Message
			seen := make(map[string]bool)
			err := src.s.read(ctx, src.c, daySubjects(src.c, d), src.after, src.upto, false, func(r jetstream.Msg) error {
				m, err := src.s.decode(ctx, r)
				if errors.Is(err, errUndecodable) {
					// Ingest writes only valid records: this one came from elsewhere.
					src.s.log().Error("skipping undecodable stored record", "subject", r.Subject(), "err", err)
					return nil
				}
				if err != nil {
					return err
				}
				if m.Timestamp < from || m.Timestamp >= to || seen[string(m.Hash)] {
					return nil
				}
				seen[string(m.Hash)] = true
				msgs = append(msgs, m)
				return nil
			})
			if err != nil {
				yield(archive.Message{}, err)
				return
			}
			slices.SortFunc(msgs, func(a, b archive.Message) int {
				return cmp.Or(cmp.Compare(a.Timestamp, b.Timestamp), bytes.Compare(a.Hash, b.Hash))
			})
			for _, m := range msgs {
				if !yield(m, nil) {
					return
				}
			}
		}
	}
}

// LateWindows finds the records of community c stored in (after, upto] whose
// timestamp is before end — messages that arrived after their window was
// built — and returns the windows they fall in: interval-long windows
// anchored at since, the last one cut at end. It reads record headers only.
func (s *Store) LateWindows(ctx context.Context, c archive.CommunityID, after, upto, since, end uint64, interval time.Duration) ([]archive.Window, int, error) {
	iv := uint64(interval / time.Second)
	if iv == 0 {
		return nil, 0, fmt.Errorf("interval %v is under a second", interval)
	}
	starts := map[uint64]bool{}
	late := 0
	err := s.read(ctx, c.String(), []string{"msgs." + c.String() + ".>"}, after, upto, true, func(r jetstream.Msg) error {
		ts, err := strconv.ParseUint(r.Headers().Get(headerTimestamp), 10, 64)
		if err != nil {
			s.log().Warn("record without a timestamp header: not checked for lateness", "subject", r.Subject())
			return nil
		}
		if ts >= end || ts < since {
			return nil
		}
		late++
		starts[since+(ts-since)/iv*iv] = true
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	out := make([]archive.Window, 0, len(starts))
	for _, w := range slices.Sorted(maps.Keys(starts)) {
		out = append(out, archive.Window{From: w, To: min(w+iv, end)})
	}
	return out, late, nil
}

// errUndecodable marks a stored record that is not a message.
var errUndecodable = errors.New("undecodable record")

// decode turns a record into its message, fetching a payload kept aside.
func (s *Store) decode(ctx context.Context, r jetstream.Msg) (archive.Message, error) {
	var m archive.Message
	data := r.Data()
	if len(data) > 0 && data[0] == '{' {
		// A record of an earlier version: one JSON message.
		if err := json.Unmarshal(data, &m); err != nil {
			return m, fmt.Errorf("%w: %v", errUndecodable, err)
		}
		return m, nil
	}
	if err := m.UnmarshalBinary(data); err != nil {
		return m, fmt.Errorf("%w: %v", errUndecodable, err)
	}
	if name := r.Headers().Get(headerBody); name != "" {
		payload, err := bus.RetryValue(ctx, func(ctx context.Context) ([]byte, error) { return s.Bus.Objects.GetBytes(ctx, name) })
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			// Retrying cannot bring it back; failing would stop the
			// community's builds for good.
			return m, fmt.Errorf("%w: payload object %s of %s is missing", errUndecodable, name, m.Hash)
		}
		if err != nil {
			return m, fmt.Errorf("payload of %s (%s): %w", m.Hash, name, err)
		}
		m.Payload = payload
	}
	return m, nil
}

// read delivers the records on subjects with a stream sequence in
// (after, upto], through an ordered consumer. With a bounded upto (a fence's
// sequence) it reads until it meets the fence, however long the serving
// replica takes to catch up (up to fenceWait without progress); unbounded,
// it stops once it has seen what was pending when it started.
//
// On a cluster, opening the consumer and each fetch are retried over
// transient errors (bus.IsTransient) for a few seconds: the consumer is
// created on one of the stream's nodes, and a pull request that reaches
// another node before that node has learnt of the new consumer's
// subscription gets "no responders" (a few percent of reads on an R3
// stream, never when the consumer is on the client's own node); a node going
// down or a leader moving gives timeouts. A repeated fetch resumes after the
// last record delivered (the ordered consumer's cursor), so no record is
// skipped or delivered twice; an error from fn ends the read at once.
func (s *Store) read(ctx context.Context, c string, subjects []string, after, upto uint64, headersOnly bool, fn func(jetstream.Msg) error) error {
	bounded := upto != math.MaxUint64
	fence := fenceSubject(c)
	if bounded {
		if after >= upto {
			return nil
		}
		if !slices.Contains(subjects, "msgs."+c+".>") {
			subjects = append(slices.Clip(subjects), fence)
		}
	}
	// One attempt per consumer (re)creation: the library's own reset loop
	// retries for ever, deaf to ctx; bus.Retry bounds it here.
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: subjects, DeliverPolicy: jetstream.DeliverAllPolicy,
		HeadersOnly: headersOnly, InactiveThreshold: 30 * time.Second, MaxResetAttempts: 1}
	if after > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, after+1
	}
	// Every read makes a server-side consumer; delete it when done, or the
	// stream reaches its consumer limit under load. The short inactivity
	// threshold cleans up after a reader that died mid-read.
	var cons jetstream.Consumer
	var pending uint64
	// Each attempt is bounded: the consumer's Info request carries no
	// timeout of its own under a context without a deadline, and a request
	// lost with a meta leader that died would hang the build for ever.
	open := bus.DefaultRetry
	open.Attempt = 5 * time.Second
	err := open.Do(ctx, func(ctx context.Context) error {
		oc, err := s.Bus.JS.OrderedConsumer(ctx, bus.StreamMessages, cfg)
		if err != nil {
			return err
		}
		info, err := oc.Info(ctx)
		if err != nil {
			s.deleteReader(oc)
			return err
		}
		cons, pending = oc, info.NumPending
		return nil
	})
	if err != nil {
		return fmt.Errorf("read messages: %w", err)
	}
	defer s.deleteReader(cons)
	idleSince := time.Now()
	for got := uint64(0); bounded || got < pending; {
		n, done := 0, false
		err := bus.Retry(ctx, func(context.Context) error {
			// Ask for what is pending (a pull request is answered early only
			// when full); past it, one at a time while waiting for the fence.
			want := int(min(max(pending, got+1)-got, 1000))
			batch, err := cons.Fetch(want, jetstream.FetchMaxWait(2*time.Second))
			if err != nil {
				return err
			}
			for msg := range batch.Messages() {
				if done {
					continue
				}
				n++
				got++
				meta, err := msg.Metadata()
				if err != nil {
					return &readAbort{fmt.Errorf("read messages: %w", err)}
				}
				// In sequence order: past upto, or at the build's fence, the read is complete.
				seq, isFence := meta.Sequence.Stream, msg.Subject() == fence
				if seq > upto || isFence && seq == upto {
					done = true
					continue
				}
				if isFence {
					continue
				}
				s.scanned.Add(1)
				if err := fn(msg); err != nil {
					return &readAbort{err}
				}
			}
			if done {
				return nil
			}
			if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
				return err
			}
			return nil
		})
		if ab := (*readAbort)(nil); errors.As(err, &ab) {
			return ab.err
		}
		if err != nil {
			return fmt.Errorf("read messages: %w", err)
		}
		if done {
			return nil
		}
		if n > 0 {
			idleSince = time.Now()
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !bounded {
			return fmt.Errorf("read messages: %d of %d pending messages arrived", got, pending)
		}
		if time.Since(idleSince) > fenceWait {
			return fmt.Errorf("read messages: fence %d not reached after %v (is a stream replica behind?)", upto, fenceWait)
		}
	}
	return nil
}

// readAbort carries an error that ends a read without a retry: fn's, or a
// record's unreadable metadata. It does not unwrap, so bus.Retry does not
// take a transient error fn returned for its own (a repeated fetch would
// resume past the record fn failed on).
type readAbort struct{ err error }

func (e *readAbort) Error() string { return e.err.Error() }

// deleteReader deletes a read's ordered consumer (its current server-side
// consumer; the library deletes the ones it replaced).
func (s *Store) deleteReader(cons jetstream.Consumer) {
	if ci := cons.CachedInfo(); ci != nil {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Bus.JS.DeleteConsumer(dctx, bus.StreamMessages, ci.Name)
	}
}

// fenceWait is how long a bounded read waits without progress for the
// replica serving it to reach the fence.
const fenceWait = 30 * time.Second

func (s *Store) log() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}
