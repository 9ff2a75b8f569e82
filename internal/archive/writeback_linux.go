package archive

import (
	"os"

	"golang.org/x/sys/unix"
)

// writebackEvery is how much data is written before its writeback is started.
const writebackEvery = 8 << 20

// writeback writes to f and starts the kernel's writeback of every
// writebackEvery bytes as they are written, without waiting for it: the
// fsync that makes the build durable then finds most data already on disk,
// and the disk works while the CPU encodes and hashes.
type writeback struct {
	f       *os.File
	off     int64 // file offset of the next byte
	started int64 // writeback started up to here
}

func newWriteback(f *os.File, off int64) *writeback { return &writeback{f: f, off: off, started: off} }

func (w *writeback) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.off += int64(n)
	if w.off-w.started >= writebackEvery {
		// Advisory: an error only means the final fsync does the work.
		unix.SyncFileRange(int(w.f.Fd()), w.started, w.off-w.started, unix.SYNC_FILE_RANGE_WRITE)
		w.started = w.off
	}
	return n, err
}
