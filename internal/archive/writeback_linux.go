package archive

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// writebackEvery is how much buffered data is written before its writeback
// is started.
const writebackEvery = 8 << 20

// directAlign is what O_DIRECT asks of buffer addresses, lengths and offsets.
// Pieces are 25 × 4096 bytes, so every archive boundary is aligned.
const directAlign = 4096

// writeback appends to the data file. Where the file system allows it, data
// goes through a second descriptor opened with O_DIRECT: the disk reads it
// from our buffer, so the CPU neither copies it into the page cache nor
// reclaims those pages later, and on a 2-core machine that time goes to
// hashing instead. A newly built archive is read back at most once (to upload
// it), so the page cache has little to lose. Otherwise, and for any write not
// aligned for O_DIRECT, data is written through the page cache and its
// writeback is started every writebackEvery bytes without waiting for it.
// Either way the final fsync makes it durable.
type writeback struct {
	f       *os.File
	direct  *os.File // nil when O_DIRECT is refused
	off     int64    // file offset of the next byte
	started int64    // buffered writeback started up to here
	// directBytes counts bytes written with O_DIRECT, for tests.
	directBytes int64
}

func newWriteback(f *os.File, off int64, direct bool) *writeback {
	w := &writeback{f: f, off: off, started: off}
	if !direct {
		return w
	}
	if d, err := os.OpenFile(f.Name(), os.O_WRONLY|unix.O_DIRECT, 0); err == nil {
		w.direct = d
	}
	return w
}

func (w *writeback) Write(p []byte) (int, error) {
	if w.direct != nil && aligned(p, w.off) {
		n, err := w.direct.WriteAt(p, w.off)
		w.off += int64(n)
		w.started = w.off
		w.directBytes += int64(n)
		if err == nil {
			return n, nil
		}
		// Some file systems accept the flag at open and refuse the write:
		// carry on through the page cache.
		w.direct.Close()
		w.direct = nil
		p = p[n:]
		m, err := w.Write(p)
		return n + m, err
	}
	n, err := w.f.WriteAt(p, w.off)
	w.off += int64(n)
	if w.off-w.started >= writebackEvery {
		// Advisory: an error only means the final fsync does the work.
		unix.SyncFileRange(int(w.f.Fd()), w.started, w.off-w.started, unix.SYNC_FILE_RANGE_WRITE)
		w.started = w.off
	}
	return n, err
}

// close releases the O_DIRECT descriptor; the file itself stays open.
func (w *writeback) close() {
	if w.direct != nil {
		w.direct.Close()
		w.direct = nil
	}
}

func aligned(p []byte, off int64) bool {
	return off%directAlign == 0 && len(p)%directAlign == 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(p)))%directAlign == 0
}
