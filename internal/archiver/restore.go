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
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/state"
)

// marks holds the archiver's local marks, beside its work folders.
func (s *Service) marks() state.LocalMarks {
	return state.LocalMarks(filepath.Join(s.Config.WorkDir, "marks"))
}

// restore brings the local folder to the committed state st: data cut to the
// part known to be committed, the missing archives fetched from the object
// store (padded back to their index sizes: objects hold them without their
// zero padding, or with it if stored before compact objects), and the
// committed index and torrent put back. Whatever an interrupted or foreign
// build left locally is discarded.
func (s *Service) restore(ctx context.Context, l archive.Layout, id archive.CommunityID, st *state.Build) error {
	c := id.String()
	dir := l.ArchiveDir(id)
	dataPath := filepath.Join(dir, archive.DataFile)
	indexPath := filepath.Join(dir, archive.IndexFile)
	m := s.marks().Read(c)
	if st.InfoHash == "" {
		// Nothing committed yet: start from an empty folder.
		// No mark reads as an empty one, and costs no file to create.
		if err := s.marks().Remove(c); err != nil {
			return err
		}
		for _, p := range []string{dataPath, indexPath, l.TorrentPath(id)} {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		return nil
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
	f, err := state.OpenTruncated(dataPath, keep)
	if err != nil {
		return err
	}
	defer f.Close()
	// A failure mid-copy (one FetchArchives could not resume) is returned,
	// and the next attempt starts again here: the local mark is written
	// only once everything is fetched and verified, so keep is the same
	// and the file is cut back to it first.
	if _, err := state.FetchArchives(ctx, s.Bus, c, st.Archives, keep, f); err != nil {
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return bus.Permanent(err)
		}
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	// Check what was fetched against the committed torrent before building
	// on it: a corrupted object must not spread into later torrents.
	cm, err := state.FetchCommitted(ctx, s.Bus, c, st)
	if err == nil {
		err = cm.Verify(keep, io.NewSectionReader(f, keep, state.FileSize(dataPath)-keep))
	}
	if errors.Is(err, state.ErrCorruptObject) {
		return fmt.Errorf("stored artefacts of %s fail verification: %w", st.InfoHash, err)
	}
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(indexPath, cm.Index, 0o644); err != nil {
		return err
	}
	if err := os.MkdirAll(l.TorrentDir, 0o700); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(l.TorrentPath(id), cm.Torrent, 0o644); err != nil {
		return err
	}
	return s.marks().Cache(c, state.LocalMark{InfoHash: st.InfoHash, DataBytes: st.DataBytes})
}
