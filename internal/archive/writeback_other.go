//go:build !linux

package archive

import "os"

// writeback is a plain file writer where the kernel offers no way to start
// writeback early; the final fsync does all the work.
type writeback struct {
	f           *os.File
	off         int64
	directBytes int64
}

func newWriteback(f *os.File, off int64, _ bool) *writeback { return &writeback{f: f, off: off} }

func (w *writeback) Write(p []byte) (int, error) {
	n, err := w.f.WriteAt(p, w.off)
	w.off += int64(n)
	return n, err
}

func (w *writeback) close() {}
