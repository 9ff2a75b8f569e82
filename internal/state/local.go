package state

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/atomicfile"
)

// LocalMark records, beside a local copy of a community folder, the
// committed torrent it was last brought to. Because data only grows, its
// first DataBytes are committed (and verified) data shared by every later
// state; only that prefix is trusted after a crash or restart.
type LocalMark struct {
	InfoHash  string `json:"infoHash"`
	DataBytes int64  `json:"dataBytes"`
}

// ReadLocalMark returns the mark at path, or the zero mark.
func ReadLocalMark(path string) LocalMark {
	var m LocalMark
	if b, err := os.ReadFile(path); err == nil {
		json.Unmarshal(b, &m)
	}
	return m
}

// WriteLocalMark replaces the mark at path atomically.
func WriteLocalMark(path string, m LocalMark) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b, 0o600)
}

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

// FetchArchives writes to w, in data order, the stored archives of community
// c that lie at or past offset from (a committed prefix the caller already
// has), checking that they follow each other and have their recorded sizes.
// It returns the bytes written.
func FetchArchives(ctx context.Context, objs jetstream.ObjectStore, c string, archives []ArchiveRef, from int64, w io.Writer) (int64, error) {
	next := from
	for _, a := range archives {
		if int64(a.Offset+a.Size) <= from {
			continue
		}
		if int64(a.Offset) != next {
			return next - from, fmt.Errorf("archive %s at %d does not follow data ending at %d", a.ID, a.Offset, next)
		}
		r, err := objs.Get(ctx, ObjectArchive(c, a.ID))
		if err != nil {
			return next - from, fmt.Errorf("archive object %s: %w", a.ID, err)
		}
		n, err := io.Copy(w, r)
		r.Close()
		if err != nil {
			return next - from, fmt.Errorf("archive object %s: %w", a.ID, err)
		}
		if n != int64(a.Size) {
			return next - from, fmt.Errorf("archive object %s has %d bytes, want %d", a.ID, n, a.Size)
		}
		next += n
	}
	return next - from, nil
}
