package messages

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/state"
)

// Cutoff is what a committed build state archived: every record with a
// stream sequence at most Seq and a timestamp before End. BuiltAt is when
// the state was committed.
type Cutoff struct {
	End     uint64
	Seq     uint64
	BuiltAt time.Time
}

// CutoffOf is the cutoff of a committed state, and false when the state has
// no watermark (nothing built yet, or written before watermarks existed):
// then nothing can be told archived.
func CutoffOf(st *state.Build) (Cutoff, bool) {
	if st == nil || st.MessagesSeq == nil || st.LastEnd == 0 || *st.MessagesSeq == 0 {
		return Cutoff{}, false
	}
	return Cutoff{End: st.LastEnd, Seq: *st.MessagesSeq, BuiltAt: st.BuiltAt}, true
}

// Within is c bounded by o: the records both say are archived.
func (c Cutoff) Within(o Cutoff) Cutoff {
	return Cutoff{End: min(c.End, o.End), Seq: min(c.Seq, o.Seq), BuiltAt: c.BuiltAt}
}

// Covers reports whether c names records o does not.
func (c Cutoff) Covers(o Cutoff) bool { return c.End > o.End || c.Seq > o.Seq }

// PruneStats says what one Prune did.
type PruneStats struct {
	Scanned int   // records read (headers only), up to the cutoff's sequence
	Records int   // records removed
	Bytes   int64 // their message bytes (record data, without subject and headers)
	Bodies  int   // payload objects deleted with them
	Purges  int   // subject purges (a day's records below a sequence, in one request)
	Deletes int   // records deleted one by one (past a record that stays)
	// Kept counts records at or below the cutoff's sequence that stay: at or
	// after its end (open windows), or not provably archived (a timestamp
	// off its subject's day, or unknown on a day straddling the end).
	Kept int
}

// ErrStaleCutoff is a cutoff that does not describe the stream as it is: its
// state was committed before the stream was created, or its watermark is past
// the stream's last sequence. Nothing is removed.
var ErrStaleCutoff = errors.New("cutoff does not match the message stream")

// pruneHook, when set (tests), runs before each removal step: "body",
// "purge" or "delete". An error stops the prune there, as a crash would.
var pruneHook func(step string) error

// Prune removes the records of community c that cut says are archived, with
// their payload objects. It is idempotent: a second run, or a run after one
// cut short, removes only what is left.
//
// # Retention model (issue #13)
//
// MESSAGES holds a community's records until the archives hold them, not
// forever. A committed build state (internal/state: LastEnd and the
// watermark MessagesSeq) says exactly what is archived: every record with a
// stream sequence at or below the watermark and a timestamp before the end —
// new windows from the records the build read up to its fence, late ones as
// supplements of the windows they fall in (records stored after the previous
// watermark). That set, and nothing else, is what Prune removes, once the
// state has been committed for a grace period (pruner.DefaultGrace; see
// Pruner). Records stored after the watermark stay whatever their
// timestamp: a late message is archived as a supplement by the next build,
// whose state then covers it, and it is pruned like the rest. Records at or
// after the end stay: they belong to windows still open. So the stream's
// records, bytes and subjects follow the open windows plus the grace period,
// not the history.
//
// Removal is by UTC day, the second token of a record's subject: a day whose
// records up to some sequence all qualify goes in one purge of
// msgs.<c>.<day>.* below that sequence (+1); records past the first one that
// does not qualify — a day straddling the end holds records of the committed
// and of the open window, a late record may follow them — are deleted one by
// one. A record qualifies when its timestamp (the Archivefleet-Ts header) is
// before the end and falls on its subject's day; a record without the header
// (written by earlier versions) when its whole day is before the end. A
// payload kept in the object store (Archivefleet-Body) is deleted just
// before its record, so a crash in between leaves a record whose payload is
// gone, which the next prune removes (nothing reads an archived record), and
// never an orphaned object. The fence records (msgs.<c>.fence) stay: each
// rolls up the one before.
//
// Prune needs no lock: builds never read what it removes. A build reads the
// windows from the committed end on (records at or after it), and late
// records stored after the committed watermark; a build that started from an
// older state cannot commit (its compare-and-set fails). A build reading the
// day that straddles the end decodes its records before filtering them by
// timestamp, so one that overlaps a prune of that day may log a large
// message's payload as missing for a record it drops anyway.
//
// Idempotent and crash-safe: Prune is stateless — it scans the community's
// records at or below the watermark (headers only; after the first prune that
// is the open windows' records, not the history) and removes those that
// qualify, so running it twice removes nothing more and a run cut short is
// finished by the next.
//
// Limits:
//   - A message sent again after its record was removed is stored again (its
//     subject is empty) and, its window being archived, archived again as a
//     supplement: the archive holds it twice, and status-go drops the second
//     copy on import (handleRetrievedMessages skips message ids it has). Only
//     a re-send older than the grace causes this: ingest's own retries and
//     several Waku replicas hearing one message come within seconds, and the
//     Waku edge's back-fill re-reads 5 minutes before its last complete pass,
//     so only a back-fill whose progress has been stuck longer than the grace
//     (a store node failing for that long; see backfill.<c>'s lastError) or
//     an operator re-ingesting old messages re-sends them. Avoiding it for
//     good would need the hashes of pruned messages kept somewhere; the cheap
//     place is the build, which has the window's committed archives locally
//     and could drop from a supplement the hashes they already hold.
//   - Records a build left out of every archive (over the size cap, a topic
//     the community no longer has: archivefleet_messages_left_out_total,
//     which ingest keeps at 0) are removed with their window: no later build
//     would archive them either.
//   - The watermark is a sequence of the stream the state was committed
//     against: Prune refuses a cutoff committed before the stream was
//     created (a recreated stream restarts its sequences) or above its last
//     sequence (ErrStaleCutoff); the next build's state is usable again.
func (s *Store) Prune(ctx context.Context, c archive.CommunityID, cut Cutoff) (PruneStats, error) {
	var st PruneStats
	if cut.Seq == 0 || cut.End == 0 {
		return st, nil
	}
	str, err := s.Bus.JS.Stream(ctx, bus.StreamMessages)
	if err != nil {
		return st, fmt.Errorf("prune: %w", err)
	}
	info := str.CachedInfo()
	if !cut.BuiltAt.IsZero() && cut.BuiltAt.Before(info.Created) {
		return st, fmt.Errorf("%w: state committed at %s, stream created at %s", ErrStaleCutoff,
			cut.BuiltAt.UTC().Format(time.RFC3339), info.Created.UTC().Format(time.RFC3339))
	}
	if cut.Seq > info.State.LastSeq {
		return st, fmt.Errorf("%w: watermark %d is past the stream's last sequence %d", ErrStaleCutoff, cut.Seq, info.State.LastSeq)
	}
	days, err := s.pruneScan(ctx, c.String(), cut, &st)
	if err != nil {
		return st, err
	}
	step := func(name string) error {
		if pruneHook != nil {
			return pruneHook(name)
		}
		return nil
	}
	for _, d := range days {
		// Payloads first: a crash after this leaves records the next prune
		// removes, never objects no record names.
		for _, name := range d.bodies {
			if err := step("body"); err != nil {
				return st, err
			}
			if err := s.Bus.Objects.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
				return st, fmt.Errorf("prune: payload object %s: %w", name, err)
			}
			st.Bodies++
		}
		if d.prefix > 0 {
			if err := step("purge"); err != nil {
				return st, err
			}
			if err := str.Purge(ctx, jetstream.WithPurgeSubject(d.filter), jetstream.WithPurgeSequence(d.prefix+1)); err != nil {
				return st, fmt.Errorf("prune: purge %s below %d: %w", d.filter, d.prefix+1, err)
			}
			st.Purges++
		}
		for _, seq := range d.singles {
			if err := step("delete"); err != nil {
				return st, err
			}
			if err := str.DeleteMsg(ctx, seq); err != nil && !gone(ctx, str, seq) {
				return st, fmt.Errorf("prune: delete %s record %d: %w", d.filter, seq, err)
			}
			st.Deletes++
		}
		st.Records += d.records
		st.Bytes += d.bytes
	}
	return st, nil
}

// gone reports whether record seq is no longer in the stream (a delete
// that failed because another prune removed it first). The server answers
// such a delete with a generic failure, so the record is looked up.
func gone(ctx context.Context, str jetstream.Stream, seq uint64) bool {
	_, err := str.GetMsg(ctx, seq)
	return errors.Is(err, jetstream.ErrMsgNotFound)
}

// pruneDay is what to remove on one subject filter of a day: its current
// records (msgs.<c>.<day>.*) or the one subject of earlier versions
// (msgs.<c>.<day>).
type pruneDay struct {
	filter  string
	prefix  uint64   // every record on filter up to here qualifies: one purge
	singles []uint64 // qualifying records after one that stays
	open    bool     // a record that stays was seen: later ones go to singles
	bodies  []string // payload objects of qualifying records
	records int
	bytes   int64
}

// pruneScan reads community c's records up to cut.Seq, in sequence order,
// and returns per day filter what qualifies.
func (s *Store) pruneScan(ctx context.Context, c string, cut Cutoff, st *PruneStats) ([]*pruneDay, error) {
	var out []*pruneDay
	byFilter := map[string]*pruneDay{}
	prefix := "msgs." + c + "."
	err := s.eachDay(ctx, c, 0, cut.Seq, func(r *bus.Record) error {
		day, legacy, ok := parseDay(strings.TrimPrefix(r.Subject, prefix))
		if !ok {
			return nil // the fence, or a subject ingest does not write
		}
		st.Scanned++
		// A day's records subject, or the one subject of the first
		// layout, is purged below a sequence; the one-message subjects of
		// the layout in between are deleted one by one (a wildcard purge
		// would reach the day's records subject too).
		filter, perMessage := r.Subject, !legacy && !isRecordsSubject(r.Subject)
		if perMessage {
			filter = prefix + strconv.FormatUint(day, 10) + ".*"
		}
		d := byFilter[filter]
		if d == nil {
			d = &pruneDay{filter: filter, open: perMessage}
			byFilter[filter] = d
			out = append(out, d)
		}
		n, ok := qualifies(r, day, cut.End)
		if !ok {
			d.open = true
			st.Kept += n
			return nil
		}
		if d.open {
			d.singles = append(d.singles, r.Seq)
		} else {
			d.prefix = r.Seq
		}
		es, _ := recordEntries(r)
		for _, e := range es {
			if e.body != "" {
				d.bodies = append(d.bodies, e.body)
			}
		}
		d.records += n
		d.bytes += int64(len(r.Data))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("prune: scan: %w", err)
	}
	return out, nil
}

// parseDay reads "<day>.<bucket>" or "<day>.<hash>" (legacy false) or
// "<day>" (a record of earlier versions) from a subject's tail after
// msgs.<c>.
func parseDay(tail string) (day uint64, legacy, ok bool) {
	dayTok, rest, hasHash := strings.Cut(tail, ".")
	d, err := strconv.ParseUint(dayTok, 10, 64)
	if err != nil || hasHash && (rest == "" || strings.Contains(rest, ".")) {
		return 0, false, false
	}
	return d, !hasHash, true
}

// qualifies reports whether record r on day's subject is archived by a
// cutoff ending at end (its sequence being at or below the cutoff's): every
// message it holds is stamped before end and on its day, or, for a record
// of the first layout without a timestamp header, its whole day is before
// end. n is how many messages it holds.
func qualifies(r *bus.Record, day, end uint64) (n int, ok bool) {
	ok = true
	read := recordTimestamps(r, func(ts uint64) {
		n++
		ok = ok && ts < end && ts/86400 == day
	})
	if !read {
		return max(n, 1), (day+1)*86400 <= end
	}
	return n, ok
}
