package archiver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/atomicfile"
	"github.com/archivefleet/archivefleet/internal/state"
)

func (s *Service) markPath(c string) string {
	return filepath.Join(s.Config.WorkDir, "marks", c+".json")
}

// restore brings the local folder to the committed state st: data cut to the
// part known to be committed, the missing archives fetched from the object
// store, and the committed index and torrent put back. Whatever an
// interrupted or foreign build left locally is discarded.
func (s *Service) restore(ctx context.Context, l archive.Layout, id archive.CommunityID, st *state.Build) error {
	c := id.String()
	dir := l.ArchiveDir(id)
	dataPath := filepath.Join(dir, archive.DataFile)
	indexPath := filepath.Join(dir, archive.IndexFile)
	m := state.ReadLocalMark(s.markPath(c))
	if st.InfoHash == "" {
		// Nothing committed yet: start from an empty folder.
		for _, p := range []string{dataPath, indexPath, l.TorrentPath(id)} {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		return state.WriteLocalMark(s.markPath(c), state.LocalMark{})
	}
	if m.InfoHash == st.InfoHash && state.FileSize(dataPath) >= st.DataBytes {
		// Up to date; the archive builder cuts any tail a crash left.
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	keep := min(m.DataBytes, state.FileSize(dataPath))
	if m.InfoHash == "" {
		keep = 0
	}
	f, err := os.OpenFile(dataPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(keep); err != nil {
		return err
	}
	if _, err := f.Seek(keep, io.SeekStart); err != nil {
		return err
	}
	for _, a := range st.Archives {
		if int64(a.Offset+a.Size) <= keep {
			continue
		}
		if int64(a.Offset) != state.FileSize(dataPath) {
			return fmt.Errorf("archive %s at %d does not follow local data of %d bytes", a.ID, a.Offset, state.FileSize(dataPath))
		}
		if err := s.fetchTo(ctx, f, state.ObjectArchive(c, a.ID), int64(a.Size)); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	index, err := s.Bus.Objects.GetBytes(ctx, state.ObjectIndex(c, st.InfoHash))
	if err != nil {
		return fmt.Errorf("index object: %w", err)
	}
	torrent, err := s.Bus.Objects.GetBytes(ctx, state.ObjectTorrent(c, st.InfoHash))
	if err != nil {
		return fmt.Errorf("torrent object: %w", err)
	}
	if err := atomicfile.WriteFile(indexPath, index, 0o644); err != nil {
		return err
	}
	if err := os.MkdirAll(l.TorrentDir, 0o700); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(l.TorrentPath(id), torrent, 0o644); err != nil {
		return err
	}
	return state.WriteLocalMark(s.markPath(c), state.LocalMark{InfoHash: st.InfoHash, DataBytes: st.DataBytes})
}

func (s *Service) fetchTo(ctx context.Context, w io.Writer, name string, size int64) error {
	r, err := s.Bus.Objects.Get(ctx, name)
	if err != nil {
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return fmt.Errorf("%w: object %s is missing", errPermanent, name)
		}
		return err
	}
	defer r.Close()
	n, err := io.Copy(w, r)
	if err != nil {
		return fmt.Errorf("object %s: %w", name, err)
	}
	if n != size {
		return fmt.Errorf("object %s has %d bytes, want %d", name, n, size)
	}
	return nil
}
