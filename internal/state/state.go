// Package state keeps each community's committed archive state in a NATS KV
// bucket: where the last archive ends, which torrent is current, the fencing
// token of the build that committed it, and what was last announced. Every
// write is a compare-and-set on the key's revision.
package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
)

// ArchiveRef locates one archive in the data file, as its index entry does;
// its bytes are stored as an object named by ObjectArchive.
//
// The object holds the archive's Size-Padding bytes without the trailing
// zero padding; objects written before compact objects hold all Size
// bytes, padding included. Readers (FetchArchives) take either and pad.
type ArchiveRef struct {
	ID     string `json:"id"`
	Offset uint64 `json:"offset"`
	Size   uint64 `json:"size"` // including padding, a whole number of pieces
	// Padding is the index entry's trailing zero bytes. States written
	// before compact objects lack it (0).
	Padding uint64 `json:"padding,omitempty"`
}

// Build is a community's committed build state (key "<community>").
type Build struct {
	LastEnd   uint64                `json:"lastEnd"` // unix seconds; next archive starts here
	Fence     int64                 `json:"fence"`   // fencing token of the committing build
	InfoHash  string                `json:"infoHash,omitempty"`
	Magnet    string                `json:"magnet,omitempty"`
	DataBytes int64                 `json:"dataBytes,omitempty"`
	Archives  []ArchiveRef          `json:"archives,omitempty"` // data order
	Ratchet   *archive.RatchetState `json:"ratchet,omitempty"`  // sender state after this build
	BuiltAt   time.Time             `json:"builtAt"`
	// MessagesSeq is the message stream sequence the build read up to:
	// messages stored after it whose window the build covered are late and
	// go into supplements at the next build. Nil in states written before
	// supplements existed; the next build then starts from its own.
	MessagesSeq *uint64 `json:"messagesSeq,omitempty"`
	// LateMessages counts the late messages the build archived as supplements.
	LateMessages int `json:"lateMessages,omitempty"`
}

// Announce is what was last announced for a community (key "announce.<community>").
type Announce struct {
	Clock    uint64    `json:"clock"` // ms; only grows
	InfoHash string    `json:"infoHash"`
	Magnet   string    `json:"magnet"`
	At       time.Time `json:"at"`
	// Sent is false between claiming a clock and the transports accepting
	// the message; a retry then resends the same clock and link.
	Sent bool `json:"sent"`
}

// Object names in the object store: archives by id, index and torrent by
// infohash. All are immutable once written.
func ObjectArchive(c, id string) string       { return c + "/archives/" + id }
func ObjectIndex(c, infoHash string) string   { return c + "/" + infoHash + "/index" }
func ObjectTorrent(c, infoHash string) string { return c + "/" + infoHash + "/torrent" }

// AnnounceKey is the key of a community's announce state.
func AnnounceKey(c string) string { return "announce." + c }

// Store reads and writes states.
type Store struct{ KV jetstream.KeyValue }

// ErrConflict is returned when a compare-and-set lost to another writer.
var ErrConflict = errors.New("state changed concurrently")

// GetBuild returns the build state and its revision (0 when absent).
func (s *Store) GetBuild(ctx context.Context, c string) (*Build, uint64, error) {
	var b Build
	rev, err := s.get(ctx, c, &b)
	return &b, rev, err
}

// GetAnnounce returns the announce state and its revision (0 when absent).
func (s *Store) GetAnnounce(ctx context.Context, c string) (*Announce, uint64, error) {
	var a Announce
	rev, err := s.get(ctx, AnnounceKey(c), &a)
	return &a, rev, err
}

func (s *Store) get(ctx context.Context, key string, v any) (uint64, error) {
	e, err := s.entry(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return 0, fmt.Errorf("state %s: %w", key, err)
	}
	return e.Revision(), nil
}

// Put writes v at key if the key is still at rev (0: must not exist).
//
// The write is repeated over a cluster's transient errors: a
// compare-and-set is safe to repeat, as at most one attempt can succeed
// against rev. An attempt that timed out may have written all the same (its
// reply lost); the repeat then fails as a conflict with that write. So
// after such an attempt, a conflict is checked: if the key now holds
// exactly these bytes at a revision past rev, the write was ours and Put
// returns that revision rather than ErrConflict. (The values written carry
// a commit time or a fencing token, so another writer's value equal byte
// for byte is not a concern.) If someone else wrote over it in between,
// Put still says ErrConflict, as it must for any lost compare-and-set:
// callers re-read and find the state moved on. If the attempts run out on
// transient errors, that error is returned and the write may or may not
// have happened: a caller that re-reads finds out which.
func (s *Store) Put(ctx context.Context, key string, v any, rev uint64) (uint64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	var n uint64
	uncertain := false // an attempt may have written without our hearing it
	err = bus.Retry(ctx, func(ctx context.Context) error {
		var err error
		if rev == 0 {
			n, err = s.KV.Create(ctx, key, b)
		} else {
			n, err = s.KV.Update(ctx, key, b, rev)
		}
		uncertain = uncertain || bus.MayHaveTakenEffect(err)
		return err
	})
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		if uncertain {
			if own, ok := s.ownWrite(ctx, key, b, rev); ok {
				return own, nil
			}
		}
		return 0, fmt.Errorf("%s: %w", key, ErrConflict)
	}
	return n, err
}

// entry reads key. A read: repeating it over a cluster's transient errors
// (a leader moving, a node going down with the request) changes nothing.
func (s *Store) entry(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	return bus.RetryValue(ctx, func(ctx context.Context) (jetstream.KeyValueEntry, error) { return s.KV.Get(ctx, key) })
}

// ownWrite reports whether key holds exactly b, written after rev, and at
// which revision: a write of ours whose reply was lost.
func (s *Store) ownWrite(ctx context.Context, key string, b []byte, rev uint64) (uint64, bool) {
	e, err := s.entry(ctx, key)
	if err != nil || e.Operation() != jetstream.KeyValuePut || e.Revision() <= rev || !bytes.Equal(e.Value(), b) {
		return 0, false
	}
	return e.Revision(), true
}

// DecodeBuild parses a stored build state.
func DecodeBuild(b []byte) (*Build, error) {
	var s Build
	err := json.Unmarshal(b, &s)
	return &s, err
}

// Waku is what the Waku edge last published for a community (key
// "waku.<community>"): announcements with a clock at or below Clock are not
// sent again.
type Waku struct {
	Clock    uint64    `json:"clock"`
	InfoHash string    `json:"infoHash"`
	Hashes   []string  `json:"hashes,omitempty"` // 14/WAKU2-MESSAGE hashes, one per chat
	At       time.Time `json:"at"`
	// What took it: relay peers on the shard, service nodes that accepted
	// every lightpush (counted per message), and the relay peers they
	// reported.
	RelayPeers          int `json:"relayPeers"`
	LightPushAccepted   int `json:"lightPushAccepted,omitempty"`
	LightPushRelayPeers int `json:"lightPushRelayPeers,omitempty"`
}

// WakuKey is the key of a community's Waku edge state.
func WakuKey(c string) string { return "waku." + c }

// GetWaku returns the Waku edge state and its revision (0 when absent).
func (s *Store) GetWaku(ctx context.Context, c string) (*Waku, uint64, error) {
	var w Waku
	rev, err := s.get(ctx, WakuKey(c), &w)
	return &w, rev, err
}

// Backfill is the Waku edge's Store v3 back-fill progress for a community
// (key "backfill.<community>").
type Backfill struct {
	// Upto is the end of the last back-fill that completed on every store
	// node asked: messages sent before it are held (or were not on the
	// store nodes). The next back-fill starts a little before it.
	Upto time.Time `json:"upto"`
	// At is when that back-fill finished.
	At time.Time `json:"at"`
	// Messages and Stored count what it received and what was new; Pages
	// the store pages read.
	Messages int `json:"messages"`
	Stored   int `json:"stored"`
	Pages    int `json:"pages"`
	// LastError is the last failure since then ("" once one succeeds).
	LastError   string    `json:"lastError,omitempty"`
	LastErrorAt time.Time `json:"lastErrorAt,omitzero"`
}

// BackfillKey is the key of a community's back-fill progress.
func BackfillKey(c string) string { return "backfill." + c }

// GetBackfill returns the back-fill progress and its revision (0 when absent).
func (s *Store) GetBackfill(ctx context.Context, c string) (*Backfill, uint64, error) {
	var b Backfill
	rev, err := s.get(ctx, BackfillKey(c), &b)
	return &b, rev, err
}
