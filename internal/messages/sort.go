package messages

import (
	"bufio"
	"bytes"
	"cmp"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/archivefleet/archivefleet/internal/archive"
)

// DefaultSortMemory bounds the messages a read holds to put them in
// archive order: past it, sorted runs go to files and are merged.
const DefaultSortMemory = 16 << 20

// sorter puts messages in archive order — timestamp, then hash — with
// memory bounded by limit bytes of messages whatever their number: runs of
// up to limit bytes are sorted in memory and, once there is more than one,
// written to temporary files in dir and merged. Messages with the same
// hash (a record of an earlier version beside this version's) come out
// once.
type sorter struct {
	dir   string
	limit int
	buf   []archive.Message
	size  int
	runs  []*os.File
}

func newSorter(dir string, limit int) *sorter {
	if limit <= 0 {
		limit = DefaultSortMemory
	}
	return &sorter{dir: dir, limit: limit}
}

func messageOrder(a, b *archive.Message) int {
	return cmp.Or(cmp.Compare(a.Timestamp, b.Timestamp), bytes.Compare(a.Hash, b.Hash))
}

// sortCost is what a message counts against the limit.
func sortCost(m *archive.Message) int {
	return len(m.Sig) + len(m.Payload) + len(m.Padding) + len(m.Hash) + len(m.ThirdPartyID) + 160
}

// add takes a message.
func (s *sorter) add(m archive.Message) error {
	s.buf = append(s.buf, m)
	s.size += sortCost(&m)
	if s.size >= s.limit {
		return s.spill()
	}
	return nil
}

// spill sorts the buffer and writes it to a new run file.
func (s *sorter) spill() error {
	if len(s.buf) == 0 {
		return nil
	}
	slices.SortFunc(s.buf, func(a, b archive.Message) int { return messageOrder(&a, &b) })
	f, err := os.CreateTemp(s.dir, "sort-run-*")
	if err != nil {
		return fmt.Errorf("sort: %w", err)
	}
	os.Remove(f.Name()) // open until closed; nothing left behind by a crash
	s.runs = append(s.runs, f)
	w := bufio.NewWriterSize(f, 256<<10)
	var n [binary.MaxVarintLen64]byte
	for i := range s.buf {
		b, err := s.buf[i].MarshalBinary()
		if err != nil {
			return fmt.Errorf("sort: %w", err)
		}
		w.Write(n[:binary.PutUvarint(n[:], uint64(len(b)))])
		w.Write(b)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("sort: write run: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	clear(s.buf)
	s.buf, s.size = s.buf[:0], 0
	return nil
}

// close removes the run files.
func (s *sorter) close() {
	for _, f := range s.runs {
		f.Close()
	}
	s.runs = nil
	s.buf = nil
}

// each yields every message added, in order, once per hash; it ends the
// sorter.
func (s *sorter) each(yield func(archive.Message) bool) error {
	defer s.close()
	if len(s.runs) == 0 {
		slices.SortFunc(s.buf, func(a, b archive.Message) int { return messageOrder(&a, &b) })
		var prev []byte
		for i, m := range s.buf {
			if i > 0 && m.Timestamp == s.buf[i-1].Timestamp && bytes.Equal(m.Hash, prev) {
				continue
			}
			prev = m.Hash
			if !yield(m) {
				return nil
			}
		}
		return nil
	}
	if err := s.spill(); err != nil {
		return err
	}
	h := &runHeap{}
	for _, f := range s.runs {
		r := &run{r: bufio.NewReaderSize(f, 64<<10)}
		ok, err := r.next()
		if err != nil {
			return err
		}
		if ok {
			h.runs = append(h.runs, r)
		}
	}
	heap.Init(h)
	var last archive.Message
	first := true
	for h.Len() > 0 {
		r := h.runs[0]
		m := r.cur
		if first || m.Timestamp != last.Timestamp || !bytes.Equal(m.Hash, last.Hash) {
			if !yield(m) {
				return nil
			}
			first, last = false, m
		}
		ok, err := r.next()
		if err != nil {
			return err
		}
		if ok {
			heap.Fix(h, 0)
		} else {
			heap.Pop(h)
		}
	}
	return nil
}

// run reads one sorted run file.
type run struct {
	r   *bufio.Reader
	cur archive.Message
	buf []byte
}

func (r *run) next() (bool, error) {
	n, err := binary.ReadUvarint(r.r)
	if errors.Is(err, io.EOF) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("sort: read run: %w", err)
	}
	// Not reused: the message yielded keeps its slices.
	r.buf = make([]byte, n)
	if _, err := io.ReadFull(r.r, r.buf); err != nil {
		return false, fmt.Errorf("sort: read run: %w", err)
	}
	r.cur = archive.Message{}
	if err := r.cur.UnmarshalBinary(r.buf); err != nil {
		return false, fmt.Errorf("sort: read run: %w", err)
	}
	return true, nil
}

type runHeap struct{ runs []*run }

func (h *runHeap) Len() int           { return len(h.runs) }
func (h *runHeap) Less(i, j int) bool { return messageOrder(&h.runs[i].cur, &h.runs[j].cur) < 0 }
func (h *runHeap) Swap(i, j int)      { h.runs[i], h.runs[j] = h.runs[j], h.runs[i] }
func (h *runHeap) Push(x any)         { h.runs = append(h.runs, x.(*run)) }
func (h *runHeap) Pop() any {
	x := h.runs[len(h.runs)-1]
	h.runs = h.runs[:len(h.runs)-1]
	return x
}
