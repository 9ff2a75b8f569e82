package archive

import (
	"crypto/sha1"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/archivefleet/archivefleet/internal/pb"
)

const (
	// bufferPieces is the size of the buffers the new data is cut into, in
	// pieces: small enough that writing and hashing start while the first
	// archive is still being encoded, large enough that each hand-over is
	// cheap next to the work it carries.
	bufferPieces = 32
	bufferBytes  = bufferPieces * PieceLength
	// hashJobPieces is what one hash worker takes at a time; two jobs a buffer
	// let both cores hash the same buffer.
	hashJobPieces = 16
	// appendInFlight bounds the buffers written or hashed but not done, and so
	// the memory of a build's new data: (appendInFlight+1) × bufferBytes, 29 MB.
	appendInFlight = 8
)

// appender writes the data a build appends and computes its piece hashes off
// the goroutine that encodes the archives. One goroutine writes, in order
// (with O_DIRECT where the file system allows, see writeback); the pieces are
// hashed on every core at once: a piece's hash depends on no other piece.
type appender struct {
	writes chan *segment
	hashes chan hashJob
	slots  chan struct{}
	segs   []*segment // in data order; touched only by the builder's goroutine
	wg     sync.WaitGroup
	done   sync.Once

	mu  sync.Mutex
	err error
	// directBytes is how much went to disk with O_DIRECT, known after finish.
	directBytes int64
}

// segment is one buffer in flight; sums receives its piece hashes.
type segment struct {
	data    []byte
	sums    []byte
	pending atomic.Int32 // the write plus every hash job
}

type hashJob struct {
	seg       *segment
	data, out []byte
}

// newAppender starts the writer and the hash workers; off is where in f the
// first appended byte goes; direct allows O_DIRECT. finish must be called.
func newAppender(f *os.File, off int64, direct bool) *appender {
	workers := runtime.GOMAXPROCS(0)
	a := &appender{
		writes: make(chan *segment, appendInFlight),
		hashes: make(chan hashJob, appendInFlight*bufferPieces/hashJobPieces),
		slots:  make(chan struct{}, appendInFlight),
	}
	a.wg.Add(1 + workers)
	go a.write(newWriteback(f, off, direct))
	for range workers {
		go a.hash()
	}
	return a
}

// buffer returns an empty buffer of bufferBytes capacity, reusing one whose
// data is written and hashed when there is one.
func (a *appender) buffer() []byte {
	return (*buffers.Get().(*[]byte))[:0]
}

// buffers are the appenders' buffers, shared by the builds of a process: a
// build of a small archive takes one it does not have to allocate and
// clear (3.2 MB, the cost of a small build's whole data otherwise).
var buffers = sync.Pool{New: func() any {
	b := make([]byte, 0, bufferBytes)
	return &b
}}

// push queues data, a whole number of pieces and at most bufferBytes, and
// waits only while appendInFlight buffers are still being written or hashed.
// data belongs to the appender afterwards. An earlier write failure is
// returned here.
func (a *appender) push(data []byte) error {
	if len(data)%PieceLength != 0 || len(data) > bufferBytes {
		return fmt.Errorf("push %d bytes: not a whole number of pieces up to %d", len(data), bufferBytes)
	}
	if err := a.failure(); err != nil {
		return err
	}
	a.slots <- struct{}{}
	n := len(data) / PieceLength
	s := &segment{data: data, sums: make([]byte, n*sha1.Size)}
	s.pending.Store(int32(1 + (n+hashJobPieces-1)/hashJobPieces))
	a.segs = append(a.segs, s)
	a.writes <- s
	for i := 0; i < n; i += hashJobPieces {
		k := min(i+hashJobPieces, n)
		a.hashes <- hashJob{seg: s, data: data[i*PieceLength : k*PieceLength], out: s.sums[i*sha1.Size : k*sha1.Size]}
	}
	return nil
}

// finish waits until everything pushed is written and hashed and returns the
// piece hashes of the appended data in order, or the first write error. It
// may be called more than once.
func (a *appender) finish() ([]byte, error) {
	a.done.Do(func() {
		close(a.writes)
		close(a.hashes)
		a.wg.Wait()
	})
	if err := a.failure(); err != nil {
		return nil, err
	}
	sums := make([]byte, 0, len(a.segs)*bufferPieces*sha1.Size)
	for _, s := range a.segs {
		sums = append(sums, s.sums...)
	}
	return sums, nil
}

func (a *appender) failure() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

func (a *appender) fail(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err == nil {
		a.err = fmt.Errorf("write data: %w", err)
	}
}

func (a *appender) write(w *writeback) {
	defer a.wg.Done()
	defer func() {
		w.close()
		a.mu.Lock()
		a.directBytes = w.directBytes
		a.mu.Unlock()
	}()
	for s := range a.writes {
		if a.failure() == nil {
			if _, err := w.Write(s.data); err != nil {
				a.fail(err)
			}
		}
		a.settle(s)
	}
}

func (a *appender) hash() {
	defer a.wg.Done()
	for j := range a.hashes {
		appendPieceSums(j.out[:0], j.data) // fills out in place
		a.settle(j.seg)
	}
}

// settle marks one piece of work on s done; the last one frees its slot and
// hands its buffer back for reuse.
func (a *appender) settle(s *segment) {
	if s.pending.Add(-1) != 0 {
		return
	}
	if cap(s.data) == bufferBytes {
		b := s.data[:0]
		buffers.Put(&b)
	}
	s.data = nil
	<-a.slots
}

// stream cuts what a build appends into the appender's buffers. Archives are
// padded to whole pieces, so every buffer it pushes is whole pieces too.
type stream struct {
	app *appender
	buf []byte
	n   uint64 // bytes written through the stream
}

// Write copies p into buffers, pushing each one that fills up.
func (s *stream) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if s.buf == nil {
			s.buf = s.app.buffer()
		}
		k := copy(s.buf[len(s.buf):cap(s.buf)], p)
		s.buf = s.buf[:len(s.buf)+k]
		p = p[k:]
		if err := s.pushFull(); err != nil {
			return n - len(p), err
		}
	}
	s.n += uint64(n)
	return n, nil
}

// zeros writes n zero bytes.
func (s *stream) zeros(n uint64) error {
	s.n += n
	for n > 0 {
		if s.buf == nil {
			s.buf = s.app.buffer()
		}
		k := min(n, uint64(cap(s.buf)-len(s.buf)))
		s.buf = s.buf[:len(s.buf)+int(k)]
		clear(s.buf[len(s.buf)-int(k):])
		n -= k
		if err := s.pushFull(); err != nil {
			return err
		}
	}
	return nil
}

func (s *stream) pushFull() error {
	if len(s.buf) < cap(s.buf) {
		return nil
	}
	b := s.buf
	s.buf = nil
	return s.app.push(b)
}

// close pushes the last, partly filled buffer; it must end on a piece boundary.
func (s *stream) close() error {
	if len(s.buf) == 0 {
		return nil
	}
	b := s.buf
	s.buf = nil
	return s.app.push(b)
}

// Field numbers of WakuMessageArchive and WakuMessage, for the streaming encoder.
const (
	archiveMetadataField = 2
	archiveMessagesField = 3
)

// metadata writes the metadata field of a WakuMessageArchive.
func (w *stream) metadata(md *pb.WakuMessageArchiveMetadata) error {
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(md)
	if err != nil {
		return fmt.Errorf("marshal archive metadata: %w", err)
	}
	_, err = w.Write(protowire.AppendBytes(protowire.AppendTag(nil, archiveMetadataField, protowire.BytesType), raw))
	return err
}

// message writes m as one element of WakuMessageArchive's messages field,
// byte for byte what proto's deterministic marshalling gives (fields in
// number order, empty proto3 fields left out), without building a
// pb.WakuMessage or copying the payload more than once. ThirdPartyID must be
// valid UTF-8. It is a method of the concrete stream, not a function of an
// io.Writer, so that neither m nor the headers escape to the heap: once per
// message, that showed in profiles.
func (w *stream) message(m *Message) error {
	var buf [2 * binary.MaxVarintLen64]byte
	hdr := protowire.AppendTag(buf[:0], archiveMessagesField, protowire.BytesType)
	if err := w.header(protowire.AppendVarint(hdr, uint64(wakuMessageSize(m)))); err != nil {
		return err
	}
	if err := w.bytesField(1, m.Sig); err != nil {
		return err
	}
	if m.Timestamp != 0 {
		hdr = protowire.AppendTag(buf[:0], 2, protowire.VarintType)
		if err := w.header(protowire.AppendVarint(hdr, m.Timestamp)); err != nil {
			return err
		}
	}
	for _, f := range [...]struct {
		num  protowire.Number
		data []byte
	}{{3, m.Topic[:]}, {4, m.Payload}, {5, m.Padding}, {6, m.Hash}} {
		if err := w.bytesField(f.num, f.data); err != nil {
			return err
		}
	}
	// A string field has the bytes field's wire form; viewing the string as
	// bytes, read-only, spares a copy.
	return w.bytesField(7, unsafe.Slice(unsafe.StringData(m.ThirdPartyID), len(m.ThirdPartyID)))
}

// bytesField writes a proto3 bytes field, nothing when data is empty.
func (w *stream) bytesField(num protowire.Number, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	var buf [1 + binary.MaxVarintLen64]byte
	if err := w.header(protowire.AppendVarint(protowire.AppendTag(buf[:0], num, protowire.BytesType), uint64(len(data)))); err != nil {
		return err
	}
	_, err := w.Write(data)
	return err
}

func (w *stream) header(b []byte) error {
	_, err := w.Write(b)
	return err
}
