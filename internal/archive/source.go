package archive

import (
	"context"
	"iter"
	"slices"
	"sort"
)

// Source yields a community's stored messages by timestamp window. Build asks
// for consecutive windows [from, to) and archives the messages in the order
// given, so a Source that wants byte-identical rebuilds must yield a stable
// order (SliceSource sorts by timestamp, then hash).
type Source interface {
	Messages(ctx context.Context, from, to uint64) iter.Seq2[Message, error]
}

// SliceSource is an in-memory Source, as status-go's
// CreateHistoryArchiveTorrentFromMessages takes messages for the Discord import.
type SliceSource struct{ msgs []Message }

// NewSliceSource sorts a copy of msgs by timestamp, then hash.
func NewSliceSource(msgs []Message) *SliceSource {
	s := &SliceSource{msgs: slices.Clone(msgs)}
	slices.SortStableFunc(s.msgs, func(a, b Message) int { return compareMessages(&a, &b) })
	return s
}

// Messages implements Source.
func (s *SliceSource) Messages(ctx context.Context, from, to uint64) iter.Seq2[Message, error] {
	lo := sort.Search(len(s.msgs), func(i int) bool { return s.msgs[i].Timestamp >= from })
	hi := sort.Search(len(s.msgs), func(i int) bool { return s.msgs[i].Timestamp >= to })
	return func(yield func(Message, error) bool) {
		for _, m := range s.msgs[lo:max(lo, hi)] {
			if err := ctx.Err(); err != nil {
				yield(Message{}, err)
				return
			}
			if !yield(m, nil) {
				return
			}
		}
	}
}

// MinTimestamp returns the earliest message time, or 0 with no messages: the
// start of a community's first archive in status-go.
func (s *SliceSource) MinTimestamp() uint64 {
	if len(s.msgs) == 0 {
		return 0
	}
	return s.msgs[0].Timestamp
}

// Len returns the number of messages held.
func (s *SliceSource) Len() int { return len(s.msgs) }
