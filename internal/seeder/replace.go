package seeder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/anacrolix/torrent"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/atomicfile"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/state"
)

// marks holds the seeder's local marks, in a hidden folder of its data
// folder (beside the community folders).
func (s *Service) marks() state.LocalMarks {
	return state.LocalMarks(filepath.Join(s.Config.DataDir, ".marks"))
}

// replace stages the new torrent's missing bytes, verifies them against its
// piece hashes, drops the old torrent (keeping it served as a snapshot for
// SnapshotGrace), moves the verified bytes into place and seeds the new
// torrent. Files change only while no torrent uses them through the file
// storage; snapshots read only bytes that do not change.
func (s *Service) replace(ctx context.Context, id archive.CommunityID, st *state.Build) error {
	c := id.String()
	cm, err := state.FetchCommitted(ctx, s.Bus, c, st)
	if err != nil {
		return err
	}
	mi, dataLen := cm.MetaInfo, cm.DataBytes()
	dir := filepath.Join(s.Config.DataDir, c)
	dataPath := filepath.Join(dir, archive.DataFile)
	staging := filepath.Join(s.Config.DataDir, ".staging", c)
	if err := os.MkdirAll(staging, 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}

	mark := s.marks().Read(c)
	trusted := min(mark.DataBytes, state.FileSize(dataPath))
	if trusted > dataLen || trusted%archive.PieceLength != 0 {
		trusted = 0
	}

	// Stage the data the new torrent adds and its index, and check them.
	tailPath := filepath.Join(staging, "data.tail")
	tail, err := os.Create(tailPath)
	if err != nil {
		return err
	}
	defer os.Remove(tailPath)
	defer tail.Close()
	n, err := state.FetchArchives(ctx, s.Bus, c, st.Archives, trusted, tail)
	s.metrics.fetched.Add(float64(n))
	if err != nil {
		return err
	}
	tailLen, _ := tail.Seek(0, io.SeekEnd)
	if trusted+tailLen != dataLen {
		return fmt.Errorf("data would be %d bytes, torrent says %d", trusted+tailLen, dataLen)
	}
	if _, err := tail.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := cm.Verify(trusted, tail); err != nil {
		return fmt.Errorf("staged bytes fail verification: %w", err)
	}

	// The old torrent stays served as a snapshot for its grace. Snapshots
	// read the data file below their length only: all of them must lie in
	// the prefix kept in place, and none may be the torrent about to be
	// seeded.
	s.mu.Lock()
	old, oldMI := s.seeding[c], s.meta[c]
	s.dropSnapshotsLocked(c, "its data is not in the verified prefix, or it is current again", func(_ int, sn *snapshot) bool {
		return sn.dataLen > trusted || sn.ih == mi.HashInfoBytes()
	})
	s.mu.Unlock()
	var snap *snapshot
	if old != nil && oldMI != nil && s.snapshotsOn() && old.InfoHash() != mi.HashInfoBytes() {
		if snap, err = s.saveSnapshot(c, oldMI, trusted, time.Now()); err != nil {
			s.Logger.Warn("superseded torrent not kept: its magnet stops working now", "community", c,
				"infohash", old.InfoHash().HexString(), "err", err)
		}
	}

	// Swap: nothing reads the files through the file storage between Drop
	// and Add; the snapshot reads the data below its length and its own
	// index, which the swap does not touch.
	s.mu.Lock()
	delete(s.seeding, c)
	delete(s.meta, c)
	if old != nil {
		old.Drop()
		s.dropped++
		s.metrics.replaced.Inc()
	}
	if snap != nil {
		if err := s.openSnapshotLocked(snap); err != nil {
			s.Logger.Warn("superseded torrent not kept: its magnet stops working now", "community", c,
				"infohash", snap.ih.HexString(), "err", err)
			os.RemoveAll(snap.dir)
			snap = nil
		} else {
			s.snaps[c] = append(s.snaps[c], snap)
		}
	}
	s.mu.Unlock()
	if snap != nil {
		s.expireSnapshots(time.Now()) // at most SnapshotMax
	}
	if err := appendFile(dataPath, trusted, tail); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, archive.IndexFile), cm.Index, 0o644); err != nil {
		return err
	}
	// The data and the index are synced: a mark lost in a crash only costs
	// a refetch, so it need not wait for the disk.
	if err := s.marks().Cache(c, state.LocalMark{DataBytes: dataLen, InfoHash: st.InfoHash}); err != nil {
		return err
	}
	s.mu.Lock()
	t, err := s.client.AddTorrent(mi)
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("add torrent: %w", err)
	}
	if err := waitComplete(ctx, t); err != nil {
		t.Drop()
		return err
	}
	s.mu.Lock()
	s.seeding[c], s.meta[c] = t, mi
	recycle := s.Config.RecycleAfter > 0 && s.dropped >= s.Config.RecycleAfter
	s.mu.Unlock()
	if recycle {
		if err := s.recycle(ctx); err != nil {
			return fmt.Errorf("recycle torrent client: %w", err)
		}
	}
	s.joinSwarm(ctx, t.InfoHash())
	if old != nil && old.InfoHash() != t.InfoHash() && snap == nil {
		s.leaveSwarm(old.InfoHash())
	}
	s.Logger.Info("seeding", "community", c, "infohash", st.InfoHash, "data_bytes", dataLen, "fetched_bytes", tailLen,
		"replaced", old != nil, "superseded_kept", snap != nil)
	ev := bus.SeedingEvent{Community: c, InfoHash: st.InfoHash, Magnet: st.Magnet, Seeder: s.Config.ID, Peer: s.Config.PublicAddr}
	if _, err := s.Bus.Publish(ctx, bus.SubjectSeeding(c), ev.MsgID(), ev); err != nil {
		return fmt.Errorf("publish seeding-started: %w", err)
	}
	return nil
}

// appendFile cuts path to keep bytes and appends r, then syncs.
func appendFile(path string, keep int64, r io.ReadSeeker) error {
	f, err := state.OpenTruncated(path, keep)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		return err
	}
	return f.Sync()
}

// waitComplete waits until a torrent whose files were placed verified is
// complete (with part files this needs no hashing).
func waitComplete(ctx context.Context, t *torrent.Torrent) error {
	select {
	case <-t.GotInfo():
	case <-ctx.Done():
		return ctx.Err()
	}
	t.DownloadAll() // as status-go: the client then knows it has everything
	deadline := time.Now().Add(time.Minute)
	for !t.Complete().Bool() {
		if time.Now().After(deadline) {
			return errors.New("torrent not complete after placing verified files")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}
