package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/atomicfile"
	"github.com/archivefleet/archivefleet/internal/bus"
)

// LocalMark records, beside a local copy of a community folder, the
// committed torrent it was last brought to. Because data only grows, its
// first DataBytes are committed (and verified) data shared by every later
// state; only that prefix is trusted after a crash or restart.
type LocalMark struct {
	InfoHash  string `json:"infoHash"`
	DataBytes int64  `json:"dataBytes"`
}

// LocalMarks is the folder of a process's local marks, one file per
// community. A community without a file has the zero mark, so an empty one
// costs no file.
type LocalMarks string

func (d LocalMarks) path(c string) string { return filepath.Join(string(d), c+".json") }

// Read returns community c's mark, or the zero mark (absent or unreadable:
// the mark is a cache, and the zero mark trusts nothing local).
func (d LocalMarks) Read(c string) LocalMark {
	var m LocalMark
	if b, err := os.ReadFile(d.path(c)); err == nil {
		json.Unmarshal(b, &m)
	}
	return m
}

// Cache replaces c's mark atomically, without waiting for the disk: it is
// written after the files it describes were synced, and its loss only costs
// a refetch.
func (d LocalMarks) Cache(c string, m LocalMark) error {
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return atomicfile.WriteCache(d.path(c), b, 0o600)
}

// Remove deletes c's mark; an absent one is not an error.
func (d LocalMarks) Remove(c string) error {
	if err := os.Remove(d.path(c)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// SweepStale deletes the temp files interrupted mark writes left.
func (d LocalMarks) SweepStale() { atomicfile.SweepStale(string(d)) }

// FileSize is the size of a file, 0 if it does not exist.
func FileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// OpenTruncated opens (creating) a data file cut to keep bytes and
// positioned at its end, ready to append.
func OpenTruncated(path string, keep int64) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(keep); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(keep, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// FetchArchives writes to w, in data order, the archives of community c
// that lie at or past offset from (a committed prefix the caller already
// has), checking that they follow each other, and pads each with zeros to
// its recorded size: an archive object holds the archive without its
// padding, or (written before compact objects) with it; ObjectPadding tells
// which. It returns the bytes written, padding included. An object of
// another size is ErrCorruptObject.
//
// Reading each object is repeated over a cluster's transient errors, an
// interrupted one resumed where it stopped (see fetchArchive). Any other
// error is returned with the bytes written so far, and the caller starts
// again from a prefix it trusts (the archiver and the seeder both cut
// their file back to the last verified length on the next attempt).
func FetchArchives(ctx context.Context, objs Objects, c string, archives []ArchiveRef, from int64, w io.Writer) (int64, error) {
	next := from
	for _, a := range archives {
		if int64(a.Offset+a.Size) <= from {
			continue
		}
		if int64(a.Offset) != next {
			return next - from, fmt.Errorf("archive %s at %d does not follow data ending at %d", a.ID, a.Offset, next)
		}
		n, err := fetchArchive(ctx, objs, c, a, w)
		next += n
		if err != nil {
			return next - from, err
		}
	}
	return next - from, nil
}

// fetchArchive writes archive a, padded, to w and returns the bytes written.
// Opening the object and reading it are repeated over a cluster's
// transient errors; an attempt that failed after copying part of the
// object is resumed by the next, which skips what w already has (the
// object is immutable and nats.go checks the digest of the whole object,
// skipped bytes included). Each attempt that makes progress starts a new
// retry budget, so a long object on a flaky cluster still completes.
func fetchArchive(ctx context.Context, objs Objects, c string, a ArchiveRef, w io.Writer) (int64, error) {
	var copied int64 // the object's bytes already in w
	var pad uint64
	for {
		progressed := false
		err := bus.Retry(ctx, func(ctx context.Context) error {
			n, p, err := copyObject(ctx, objs, c, a, copied, w)
			copied, pad = copied+n, p
			if err != nil && n > 0 && bus.IsTransient(err) {
				progressed = true
				return nil // resumed by the next round, with a fresh budget
			}
			return err
		})
		if err != nil {
			return copied, fmt.Errorf("archive object %s: %w", a.ID, err)
		}
		if !progressed {
			break
		}
	}
	n := copied
	for pad > 0 {
		p, err := w.Write(zeros[:min(pad, uint64(len(zeros)))])
		n += int64(p)
		if err != nil {
			return n, err
		}
		pad -= uint64(p)
	}
	return n, nil
}

// objectOpenTime and objectReadRate set the deadline of one attempt at an
// archive object: 5 s to open it plus 1 MiB/s.
const (
	objectOpenTime = 5 * time.Second
	objectReadRate = 1 << 20 // bytes per second
)

// copyObject is one attempt at archive a's object: it checks its size (the
// padding it needs), skips the first skip bytes and copies the rest to w.
// It returns the bytes copied and the padding.
func copyObject(ctx context.Context, objs Objects, c string, a ArchiveRef, skip int64, w io.Writer) (int64, uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, objectOpenTime+time.Duration(a.Size/objectReadRate)*time.Second)
	defer cancel()
	var pad uint64
	n, err := objs.ReadObject(ctx, ObjectArchive(c, a.ID), skip, w, func(info *jetstream.ObjectInfo) error {
		var err error
		pad, err = a.ObjectPadding(c, info.Size)
		return err
	})
	return n, pad, err
}

// zeros is the largest padding status-go's rule gives: a whole piece.
var zeros [archive.PieceLength]byte

// ObjectPadding returns how many zero bytes follow the objectSize bytes of
// a's object to make the archive's Size bytes:
//
//   - objectSize == Size: the object holds the padding (written before
//     compact objects, or an archive without padding): none;
//   - objectSize == Size-Padding: a compact object: Padding;
//   - a ref without Padding (written before compact objects, when an
//     upgraded archiver stored the object in a build that did not commit):
//     Size-objectSize when status-go's padding rule takes objectSize to
//     Size, that is when it is the length of an archive of this Size.
//
// Any other size is ErrCorruptObject, naming community c, the archive and
// the sizes. The bytes are verified against the torrent's piece hashes
// afterwards either way.
func (a ArchiveRef) ObjectPadding(c string, objectSize uint64) (uint64, error) {
	switch {
	case objectSize == a.Size:
		return 0, nil
	case a.Padding > 0 && a.Padding < a.Size:
		if objectSize == a.Size-a.Padding {
			return a.Padding, nil
		}
		return 0, fmt.Errorf("%w: archive object %s of community %s has %d bytes: want %d (without its %d bytes of padding) or %d (padded)",
			ErrCorruptObject, a.ID, c, objectSize, a.Size-a.Padding, a.Padding, a.Size)
	case a.Padding == 0 && objectSize > 0 && objectSize < a.Size:
		if size, pad := archive.PaddedSize(objectSize); size == a.Size {
			return pad, nil
		}
	}
	return 0, fmt.Errorf("%w: archive object %s of community %s has %d bytes: want %d (padded) or the length of an archive padded to it",
		ErrCorruptObject, a.ID, c, objectSize, a.Size)
}
