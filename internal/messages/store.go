// Package messages keeps the Waku messages of every community, as status-go's
// control node keeps its waku_messages table, in the MESSAGES stream.
//
// Layout: a message's record is on msgs.<community>.<utc day>.<bucket>,
// bucket being the first hex digit of its hash, so a community-day has at
// most 16 subjects whatever its number of messages: the server's
// per-subject state and its wildcard matching cost the same for ten
// messages a day or a million. A message is never stored twice: ingest
// keeps, per bucket, an index of the hashes stored there and writes each
// record with the bucket's expected last sequence, so a write that raced
// another (a replica, another request) fails and is checked again against
// what that one stored (dedup.go). Records are status-go's protobuf
// WakuMessage; a payload over InlinePayloadBytes is kept in the object
// store (named by its digest), so no record needs more than the NATS
// server's default max payload. Records of earlier versions are still read
// and pruned: JSON on msgs.<community>.<day>, and one record per subject on
// msgs.<community>.<day>.<hash hex>, which ingest also checks while a day
// holds any.
//
// Reads cost what they return: batched direct gets by subject, no
// consumer (internal/bus Read). A window's messages come out in archive
// order (timestamp, then hash) through a sort whose memory is bounded,
// runs going to files past it (sort.go).
//
// Every record's stream sequence orders it against builds: a build reads the
// messages stored up to a watermark (its fence's sequence) and commits that
// watermark, and the next build finds the records stored after it whose
// window was already built — late messages — and archives them as
// supplements. Nothing accepted is left out.
package messages

import (
	"context"
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
const InlinePayloadBytes = 128 << 10

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
	// SortDir holds the run files of reads larger than SortMemory
	// (default DefaultSortMemory); empty is the system's temporary folder.
	SortDir    string
	SortMemory int
	// DedupMemory bounds ingest's index of stored hashes (default
	// DefaultDedupMemory).
	DedupMemory int

	scanned    atomic.Uint64
	budgetOnce sync.Once

	layoutMu    sync.Mutex
	layoutKnown bool
	legacy      bool
	layoutAt    time.Time
	dedupOnce   sync.Once
	dedupIdx    *dedupIndex
	stream      atomic.Pointer[jetstream.Stream]
}

// Scanned counts stored messages read back so far: a range read costs the
// messages of the days it spans, not the whole history.
func (s *Store) Scanned() uint64 { return s.scanned.Load() }

// Subject is where a message of community c is stored: its day's records
// subject.
func Subject(c archive.CommunityID, timestamp uint64, hash []byte) string {
	return daySubject(c.String(), timestamp/day)
}

// recordsToken ends a day's records subject, msgs.<c>.<day>.m: a literal
// subject the server finds in its subject index, which a wildcard over a
// large index is not.
const recordsToken = "m"

func daySubject(c string, d uint64) string {
	return "msgs." + c + "." + strconv.FormatUint(d, 10) + "." + recordsToken
}

// daysFilter matches every day's records subject of community c.
func daysFilter(c string) string { return "msgs." + c + ".*." + recordsToken }

// legacyDayFilters are the subjects of one day written by earlier
// versions: one message per subject (a wildcard, which also matches the
// day's records subject: readers skip it there), and the one JSON record
// per day before that.
func legacyDayFilters(c string, d uint64) []string {
	legacy := bus.SubjectMessagesLegacy(c, d)
	return []string{legacy + ".*", legacy}
}

func (s *Store) communities() Communities {
	c := s.Communities
	if c == nil {
		c = registry.New(s.Bus.Communities)
	}
	return leaderChecked{c, s.Bus}
}

// leaderChecked asks the registry bucket's leader before refusing a
// community as unregistered: a registry read may be answered by a replica a
// write behind, and a community registered a moment ago is not refused.
type leaderChecked struct {
	Communities
	b *bus.Bus
}

func (l leaderChecked) Get(ctx context.Context, id archive.CommunityID) (*registry.Community, error) {
	com, err := l.Communities.Get(ctx, id)
	if !errors.Is(err, registry.ErrNotFound) || l.b == nil {
		return com, err
	}
	r, lerr := l.b.LeaderGet(ctx, "KV_"+bus.BucketCommunities, bus.Get{LastFor: "$KV." + bus.BucketCommunities + "." + id.String()})
	if lerr != nil || r == nil || len(r.Data) == 0 {
		return com, err
	}
	if op := r.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
		return com, err
	}
	return registry.Decode(r.Data)
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
// inside the range and yields them in archive order (timestamp, then
// hash), once per hash. A message's day subject follows from its
// timestamp, so sorting day by day gives the global order; a day's sort
// holds at most SortMemory bytes of messages, the rest in run files.
func (src *source) Messages(ctx context.Context, from, to uint64) iter.Seq2[archive.Message, error] {
	return func(yield func(archive.Message, error) bool) {
		if from >= to {
			return
		}
		for d := from / day; d <= (to-1)/day; d++ {
			srt := newSorter(src.s.SortDir, src.s.SortMemory)
			var fail error
			filters := []string{daySubject(src.c, d)}
			legacy, err := src.s.legacyMayRemain(ctx)
			if err != nil {
				yield(archive.Message{}, err)
				return
			}
			if legacy {
				filters = append(filters, legacyDayFilters(src.c, d)...)
			}
			for fi, filter := range filters {
				err := src.s.read(ctx, filter, src.after, src.upto, func(r *bus.Record) error {
					if fi > 0 && isRecordsSubject(r.Subject) {
						return nil // read with the first filter
					}
					es, err := recordEntries(r)
					if err != nil {
						// Ingest writes only valid records: this one came from elsewhere.
						src.s.log().Error("skipping undecodable stored record", "subject", r.Subject, "err", err)
						return nil
					}
					src.s.scanned.Add(uint64(len(es)))
					for i := range es {
						if ts, ok := entryTimestamp(es[i].msg); ok && (ts < from || ts >= to) && len(es[i].msg) > 0 && es[i].msg[0] != '{' {
							continue // outside the range: not decoded, its payload not fetched
						}
						m, err := src.s.decodeEntry(ctx, &es[i])
						if errors.Is(err, errUndecodable) {
							src.s.log().Error("skipping undecodable stored message", "subject", r.Subject, "seq", r.Seq, "err", err)
							continue
						}
						if err != nil {
							return err
						}
						if m.Timestamp < from || m.Timestamp >= to {
							continue
						}
						if err := srt.add(m); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					fail = err
					break
				}
			}
			if fail != nil {
				srt.close()
				yield(archive.Message{}, fail)
				return
			}
			stopped, n := false, 0
			if err := srt.each(func(m archive.Message) bool {
				// A build that is cancelled (a shut-down, a lost lock)
				// stops here within a few thousand messages.
				if n++; n%4096 == 0 && ctx.Err() != nil {
					yield(archive.Message{}, ctx.Err())
					stopped = true
					return false
				}
				if !yield(m, nil) {
					stopped = true
					return false
				}
				return true
			}); err != nil {
				yield(archive.Message{}, err)
				return
			}
			if stopped {
				return
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
	count := func(r *bus.Record) error {
		if r.Subject == fenceSubject(c.String()) {
			return nil
		}
		ok := recordTimestamps(r, func(ts uint64) {
			if ts >= end || ts < since {
				return
			}
			late++
			starts[since+(ts-since)/iv*iv] = true
		})
		if !ok {
			s.log().Warn("record without readable timestamps: not checked for lateness", "subject", r.Subject, "seq", r.Seq)
		}
		return nil
	}
	err := s.eachDay(ctx, c.String(), after, upto, count)
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

// eachDay calls fn for community c's records stored in (after, upto], day
// by day: the subject index tells which days hold any (one request), and
// each of those is read on its literal subject. While records of earlier
// versions may remain, or for a community with over 1,024 days held, it
// reads the community's wildcard instead, which the server may have to
// look for through its message blocks.
func (s *Store) eachDay(ctx context.Context, c string, after, upto uint64, fn func(*bus.Record) error) error {
	legacy, err := s.legacyMayRemain(ctx)
	if err != nil {
		return err
	}
	if !legacy {
		last, err := s.Bus.LastPerSubject(ctx, bus.StreamMessages, daysFilter(c), after+1, upto)
		if err == nil {
			days := slices.Sorted(maps.Keys(last))
			for _, subject := range days {
				if err := s.read(ctx, subject, after, upto, fn); err != nil {
					return err
				}
			}
			return nil
		}
		if !errors.Is(err, bus.ErrTooManySubjects) {
			return err
		}
	}
	return s.read(ctx, "msgs."+c+".>", after, upto, fn)
}

// layoutRecheck is how long a process trusts its answer to whether records
// of earlier versions remain (they only go away).
const layoutRecheck = time.Minute

// legacyMayRemain tells whether MESSAGES may still hold records of the
// layouts before one subject per community-day: the stream's first record
// comes before the first record of this layout (bus.KeyMessagesLayout, set
// up by Setup), or that is not known.
func (s *Store) legacyMayRemain(ctx context.Context) (bool, error) {
	s.layoutMu.Lock()
	defer s.layoutMu.Unlock()
	if s.layoutKnown && !s.legacy {
		return false, nil
	}
	if s.layoutKnown && time.Since(s.layoutAt) < layoutRecheck {
		return s.legacy, nil
	}
	from, ok, err := bus.MessagesLayout(ctx, s.Bus)
	if err != nil {
		return true, err
	}
	legacy := true
	if ok {
		str, err := bus.RetryValue(ctx, func(ctx context.Context) (jetstream.Stream, error) { return s.Bus.JS.Stream(ctx, bus.StreamMessages) })
		if err != nil {
			return true, fmt.Errorf("message stream: %w", err)
		}
		st := str.CachedInfo().State
		legacy = st.Msgs > 0 && st.FirstSeq < from
	}
	s.legacy, s.layoutKnown, s.layoutAt = legacy, true, time.Now()
	return legacy, nil
}

// read calls fn for the records on filter with a stream sequence in
// (after, upto], in sequence order (bus.Read: batched direct gets; with a
// bounded upto, the stream's leader confirms nothing up to it was missed
// by a replica behind it). An error from fn ends the read at once.
func (s *Store) read(ctx context.Context, filter string, after, upto uint64, fn func(*bus.Record) error) error {
	if upto == math.MaxUint64 {
		upto = 0 // no bound
	} else if after >= upto {
		return nil
	}
	n := 0
	_, err := s.Bus.Read(ctx, bus.Read{Stream: bus.StreamMessages, Filter: filter, From: after + 1, Upto: upto}, func(r *bus.Record) error {
		if n++; n%readProgress == 0 {
			s.log().Info("reading stored messages", "filter", filter, "records", n)
		}
		return fn(r)
	})
	if err != nil {
		return fmt.Errorf("read messages: %w", err)
	}
	return nil
}

// readProgress is how many records a read logs its progress after.
const readProgress = 20_000

func (s *Store) log() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}
