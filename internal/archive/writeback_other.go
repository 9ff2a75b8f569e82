//go:build !linux

package archive

import "os"

// writeback is a plain file writer where the kernel offers no way to start
// writeback early; the final fsync does all the work.
type writeback struct{ f *os.File }

func newWriteback(f *os.File, off int64) *writeback { return &writeback{f: f} }

func (w *writeback) Write(p []byte) (int, error) { return w.f.Write(p) }
