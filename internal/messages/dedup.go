package messages

import (
	"container/list"
	"context"
	"errors"
	"hash/fnv"
	"math"
	"strconv"
	"strings"
	"sync"

	"github.com/archivefleet/archivefleet/internal/bus"
)

// Ingest stores a message at most once. Its record goes on its day's
// bucket subject, written with the bucket's expected last sequence; the
// writer first looks the hash up in its index of what the bucket holds.
// The index is built by reading the bucket once and kept up to date with
// the writer's own records; a write refused because the bucket moved
// (another process, another request) reads what was added and checks
// again. So two writers racing with the same message store it once, and
// the server holds 16 subjects per community-day, not one per message.

// DefaultDedupMemory bounds the hash indexes a process keeps; past it the
// least recently used buckets are dropped and read again when next
// written to.
const DefaultDedupMemory = 64 << 20

// indexEntryCost is what one stored message costs in an index (a map
// entry of two 64-bit words and the map's overhead).
const indexEntryCost = 48

// maxWriteAttempts bounds how often one message is tried against a bucket
// that keeps moving under it.
const maxWriteAttempts = 20

// bucketKey names a community-day's records subject.
type bucketKey struct {
	c   string
	day uint64
}

// bucketIndex is what one bucket subject holds, as far as this process
// knows: the sequence of each stored hash (by a 64-bit key of the hash;
// hashes sharing a key are told apart by their records), and the last
// sequence on the subject it has seen.
type bucketIndex struct {
	key    bucketKey
	mu     sync.Mutex // held while loading and writing
	loaded bool
	last   uint64
	seqs   map[uint64]uint64   // key → sequence
	more   map[uint64][]uint64 // further sequences under a key (rare)
	n      int                 // guarded by mu

	elem    *list.Element // in dedupIndex.lru; guarded by dedupIndex.mu
	users   int           // guarded by dedupIndex.mu
	counted int           // n as last counted in dedupIndex.cost
}

func hashKey(h []byte) uint64 {
	f := fnv.New64a()
	f.Write(h)
	return f.Sum64()
}

func (bi *bucketIndex) add(hash []byte, seq uint64) {
	k := hashKey(hash)
	if _, ok := bi.seqs[k]; ok {
		if bi.more == nil {
			bi.more = map[uint64][]uint64{}
		}
		bi.more[k] = append(bi.more[k], seq)
	} else {
		bi.seqs[k] = seq
	}
	bi.n++
	bi.last = max(bi.last, seq)
}

// lookup returns the sequences of records that may hold hash.
func (bi *bucketIndex) lookup(hash []byte) []uint64 {
	k := hashKey(hash)
	seq, ok := bi.seqs[k]
	if !ok {
		return nil
	}
	return append([]uint64{seq}, bi.more[k]...)
}

// drop forgets a record that is gone (pruned).
func (bi *bucketIndex) drop(hash []byte, seq uint64) {
	k := hashKey(hash)
	if bi.seqs[k] == seq {
		if l := bi.more[k]; len(l) > 0 {
			bi.seqs[k], bi.more[k] = l[0], l[1:]
		} else {
			delete(bi.seqs, k)
		}
		bi.n--
		return
	}
	l := bi.more[k]
	for i, s := range l {
		if s == seq {
			bi.more[k] = append(l[:i], l[i+1:]...)
			bi.n--
			return
		}
	}
}

func (bi *bucketIndex) reset() {
	clear(bi.seqs)
	bi.more = nil
	bi.n, bi.last, bi.loaded = 0, 0, false
}

// dedupIndex holds the bucket indexes of a process, least recently used
// first out.
type dedupIndex struct {
	mu      sync.Mutex
	limit   int
	cost    int
	buckets map[bucketKey]*bucketIndex
	lru     *list.List
	// v2 says, per community-day, whether it holds per-message records of
	// the version before buckets, which ingest then checks one by one.
	v2 map[bucketKey]bool
}

func newDedupIndex(limit int) *dedupIndex {
	if limit <= 0 {
		limit = DefaultDedupMemory
	}
	return &dedupIndex{limit: limit, buckets: map[bucketKey]*bucketIndex{}, lru: list.New(), v2: map[bucketKey]bool{}}
}

// acquire returns the index of key, held until release.
func (d *dedupIndex) acquire(key bucketKey) *bucketIndex {
	d.mu.Lock()
	defer d.mu.Unlock()
	bi := d.buckets[key]
	if bi == nil {
		bi = &bucketIndex{key: key, seqs: map[uint64]uint64{}}
		bi.elem = d.lru.PushFront(bi)
		d.buckets[key] = bi
	} else {
		d.lru.MoveToFront(bi.elem)
	}
	bi.users++
	return bi
}

// release gives an index back (its holder no longer changes it) and drops
// the least recently used ones no one holds while the indexes cost more
// than the limit.
func (d *dedupIndex) release(bi *bucketIndex) {
	// n under the index's own lock: another holder may be writing to it.
	bi.mu.Lock()
	n := bi.n
	bi.mu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	bi.users--
	d.cost += (n - bi.counted) * indexEntryCost
	bi.counted = n
	for e := d.lru.Back(); e != nil && d.cost > d.limit; {
		prev := e.Prev()
		if b := e.Value.(*bucketIndex); b.users == 0 {
			d.cost -= b.counted * indexEntryCost
			d.lru.Remove(e)
			delete(d.buckets, b.key)
		}
		e = prev
	}
	if len(d.v2) > 100_000 {
		clear(d.v2) // asked again when needed
	}
}

// load reads the bucket's records after what the index has seen.
func (s *Store) loadBucket(ctx context.Context, bi *bucketIndex) error {
	subject := daySubject(bi.key.c, bi.key.day)
	return s.read(ctx, subject, bi.last, math.MaxUint64, func(r *bus.Record) error {
		es, err := recordEntries(r)
		if err != nil {
			s.log().Error("unreadable record in a bucket: its messages are not known to ingest", "subject", r.Subject, "seq", r.Seq, "err", err)
		}
		for _, e := range es {
			if h := entryHash(e.msg); h != nil {
				bi.add(h, r.Seq)
			}
		}
		bi.last = max(bi.last, r.Seq)
		return nil
	})
}

// reloadBucket starts the index over (records were removed under it).
func (s *Store) reloadBucket(ctx context.Context, bi *bucketIndex) error {
	bi.reset()
	if err := s.loadBucket(ctx, bi); err != nil {
		return err
	}
	bi.loaded = true
	return nil
}

// hasV2 tells whether community c's day d may hold records of the
// one-message-per-subject layout, which ingest then looks up message by
// message: while records of earlier layouts remain in the stream.
func (s *Store) hasV2(ctx context.Context, c string, d uint64) (bool, error) {
	return s.legacyMayRemain(ctx)
}

func (s *Store) dedup() *dedupIndex {
	s.dedupOnce.Do(func() { s.dedupIdx = newDedupIndex(s.DedupMemory) })
	return s.dedupIdx
}

// errWrongLast is the server refusing a write whose expected last
// sequence on the subject is not the subject's.
func wrongLastSeq(err error) (actual uint64, ok bool) {
	if !bus.IsWrongLastSequence(err) {
		return 0, false
	}
	// "wrong last sequence: 123"
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		if v, perr := strconv.ParseUint(strings.TrimSpace(msg[i+2:]), 10, 64); perr == nil {
			return v, true
		}
	}
	return 0, true
}

var errBucketMoving = errors.New("the bucket kept moving under the write")
