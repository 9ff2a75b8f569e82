package archiver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
)

func (s *Service) layout() archive.Layout {
	return archive.Layout{DataDir: filepath.Join(s.Config.WorkDir, "archivedata"), TorrentDir: filepath.Join(s.Config.WorkDir, "torrents")}
}

// build runs one due event under the lock and returns the metrics result label.
func (s *Service) build(ctx context.Context, log *slog.Logger, com *registry.Community, ev bus.DueEvent, fence int64) (string, error) {
	c := com.ID.String()
	st, _, err := s.State.GetBuild(ctx, c)
	if err != nil {
		return "", err
	}
	if st.LastEnd >= ev.End {
		return "skipped", nil // finished by another worker while we waited for the lock
	}
	if st.Fence >= fence {
		return "", fmt.Errorf("stale fence %d: state was committed under fence %d", fence, st.Fence)
	}
	from := com.NextStart(st.LastEnd)
	if from >= ev.End {
		return "skipped", nil
	}
	upto, err := s.Sources.Fence(ctx, com.ID)
	if err != nil {
		return "", err
	}
	supplements, late, err := s.lateWindows(ctx, log, com, st, from, upto)
	if err != nil {
		return "", fmt.Errorf("find late messages: %w", err)
	}
	log.Info("build started", "from", from, "to", ev.End, "late_messages", late, "supplement_windows", len(supplements))
	l := s.layout()
	if err := s.restore(ctx, l, com.ID, st); err != nil {
		return "", fmt.Errorf("restore committed folder: %w", err)
	}

	opts := archive.BuildOptions{
		Community: com.ID, Topics: com.Topics, From: from, To: ev.End,
		Interval: time.Duration(com.Interval), Source: s.Sources.Between(com.ID, 0, upto), Logger: log,
		Supplements: supplements,
		Torrent:     archive.TorrentOptions{AnnounceList: s.Config.AnnounceList, CreatedBy: s.Config.CreatedBy},
		BufferedIO:  s.Config.BufferedIO,
	}
	if st.MessagesSeq != nil {
		opts.SupplementSource = s.Sources.Between(com.ID, *st.MessagesSeq, upto)
	}
	var ratchet *archive.HashRatchet
	if com.Encrypted {
		ratchet = ratchetFor(com, st)
		opts.Encrypter, opts.Decrypter = ratchet, ratchet
	}
	res, err := archive.Build(ctx, l, opts)
	if err != nil {
		if errors.Is(err, archive.ErrMalformed) || errors.Is(err, archive.ErrOverlap) || errors.Is(err, archive.ErrInvalidCommunityID) {
			return "", bus.Permanent(err)
		}
		return "", err
	}
	if n := len(res.Skipped) + res.ForeignTopic; n > 0 {
		// Ingest refuses such messages; these were stored some other way or
		// the community's topics changed since. The builder logged each one.
		s.metrics.leftOut.Add(float64(n))
		log.Warn("stored messages left out of every archive", "unarchivable", len(res.Skipped), "foreign_topic", res.ForeignTopic)
	}
	next := &state.Build{
		LastEnd: ev.End, Fence: fence, InfoHash: st.InfoHash, Magnet: st.Magnet,
		DataBytes: st.DataBytes, Archives: slices.Clone(st.Archives), Ratchet: st.Ratchet, BuiltAt: time.Now().UTC(),
		MessagesSeq: &upto, LateMessages: res.LateMessages,
	}
	label := "empty"
	if len(res.Archives) > 0 {
		label = "built"
		if err := s.upload(ctx, l, com.ID, res); err != nil {
			return "", fmt.Errorf("upload artefacts: %w", err)
		}
		next.InfoHash, next.Magnet, next.DataBytes = res.InfoHash, res.Magnet, res.DataBytes
		for _, e := range res.Archives {
			next.Archives = append(next.Archives, state.ArchiveRef{ID: e.ID, Offset: e.Offset, Size: e.Size, Padding: e.Padding})
			s.metrics.bytes.Add(float64(e.Size))
		}
		if ratchet != nil {
			next.Ratchet = ratchet.State
		}
	}
	if err := context.Cause(ctx); err != nil {
		return "", err // lock lost or shutting down: do not commit
	}
	if err := s.commit(ctx, c, st, next); err != nil {
		return "", err
	}
	if err := s.marks().Cache(c, state.LocalMark{InfoHash: next.InfoHash, DataBytes: next.DataBytes}); err != nil {
		log.Warn("local mark not written; next build restores from the object store", "err", err)
	}
	built := bus.BuiltEvent{Community: c, From: from, End: ev.End, InfoHash: next.InfoHash, Magnet: next.Magnet, Archives: res.ArchiveIDs, Fence: fence}
	// Publish repeats over transient errors: the event's message id
	// (built:<c>:<end>) makes a repeat of a stored one a duplicate.
	if _, err := s.Bus.Publish(ctx, bus.SubjectBuilt(c), built.MsgID(), built); err != nil {
		// The state is committed; seeders follow the state, so this only
		// delays observers. Do not rebuild for it.
		log.Warn("archive-built publish failed", "err", err)
	}
	log.Info("archives committed", "from", from, "archives", len(res.Archives), "messages", res.Messages,
		"supplement_archives", res.SupplementArchives, "late_messages", res.LateMessages,
		"infohash", next.InfoHash, "data_bytes", next.DataBytes, "pieces_hashed", res.PiecesHashed)
	return label, nil
}

// lateWindows finds the windows before from that gained messages since the
// last build read the store (its watermark), up to this build's watermark.
func (s *Service) lateWindows(ctx context.Context, log *slog.Logger, com *registry.Community, st *state.Build, from, upto uint64) ([]archive.Window, int, error) {
	switch {
	case st.MessagesSeq == nil:
		if st.LastEnd > 0 {
			log.Info("state predates late-message tracking: this build starts it")
		}
		return nil, 0, nil
	case upto < *st.MessagesSeq:
		log.Error("message stream is behind the last build's watermark (was it recreated?): late messages cannot be told apart",
			"watermark", *st.MessagesSeq, "stream_last_seq", upto)
		return nil, 0, nil
	case upto == *st.MessagesSeq || from <= com.Since:
		return nil, 0, nil
	}
	return s.Sources.LateWindows(ctx, com.ID, *st.MessagesSeq, upto, com.Since, from, time.Duration(com.Interval))
}

// commit writes the new state if the stored one is still the base we built
// on and no newer fence has committed: Kleppmann's fenced write, with the
// check done by the KV's compare-and-set.
//
// The reads and the write repeat over a cluster's transient errors
// (state.Store). A write whose reply was lost and whose repeat then lost
// the compare-and-set to it comes back here as a conflict; the re-read
// then finds our own fence, infohash and end — no other build commits
// under our fence, as each lock acquisition has its own — and the commit
// has succeeded.
//
// On a cluster a read may be answered by a replica a write or two behind
// the leader (around a node's restart): a state older than our base (a
// lower fence: fences only grow) is read again, and a compare-and-set
// against a revision that was not the latest is a conflict, also read
// again.
func (s *Service) commit(ctx context.Context, c string, base, next *state.Build) error {
	for stale := 0; ; {
		cur, rev, err := s.State.GetBuild(ctx, c)
		if err != nil {
			return err
		}
		if cur.Fence == next.Fence && cur.InfoHash == next.InfoHash && cur.LastEnd == next.LastEnd {
			return nil // ours, committed by an attempt whose reply was lost
		}
		if cur.Fence < base.Fence {
			if stale++; stale > staleReads {
				return fmt.Errorf("commit: state read at fence %d %d times, older than the fence %d built on", cur.Fence, stale, base.Fence)
			}
			if err := bus.Sleep(ctx, 20*time.Millisecond); err != nil {
				return err
			}
			continue
		}
		if cur.Fence >= next.Fence {
			return fmt.Errorf("commit rejected: state carries fence %d, ours is %d", cur.Fence, next.Fence)
		}
		if cur.LastEnd != base.LastEnd || cur.InfoHash != base.InfoHash {
			return fmt.Errorf("commit rejected: state moved to %d (%s) while building on %d (%s)", cur.LastEnd, cur.InfoHash, base.LastEnd, base.InfoHash)
		}
		_, err = s.State.Put(ctx, c, next, rev)
		if errors.Is(err, state.ErrConflict) {
			// Another field changed, or the read was behind: re-check
			// and retry.
			if err := bus.Sleep(ctx, bus.Jitter(25*time.Millisecond)); err != nil {
				return err
			}
			continue
		}
		return err
	}
}

// staleReads bounds how often commit reads a state older than its base
// before giving up (20 ms apart: a replica catching up takes milliseconds).
const staleReads = 100

// ratchetFor resumes the sender's ratchet from the committed state when it is
// on the community's current key, else starts the current key's chain.
func ratchetFor(com *registry.Community, st *state.Build) *archive.HashRatchet {
	rs := &archive.RatchetState{Key: *com.RatchetKey}
	if st.Ratchet != nil && st.Ratchet.Key.Timestamp == com.RatchetKey.Timestamp && bytes.Equal(st.Ratchet.Key.Key, com.RatchetKey.Key) {
		cp := *st.Ratchet
		rs = &cp
	}
	return &archive.HashRatchet{Community: com.ID, InstallationID: com.InstallationID, State: rs, Keys: com.OldKeys}
}

// upload stores the new archives, index and torrent. Names are content
// addressed (archive id, infohash), so a redo writes the same names and an
// abandoned build leaves only unreferenced objects. An archive is stored
// without its trailing zero padding (Size-Padding bytes; readers pad it
// back, see state.FetchArchives): a small archive costs its own bytes, not
// a whole 100 KiB piece.
func (s *Service) upload(ctx context.Context, l archive.Layout, id archive.CommunityID, res *archive.BuildResult) error {
	c := id.String()
	dir := l.ArchiveDir(id)
	data, err := os.Open(filepath.Join(dir, archive.DataFile))
	if err != nil {
		return err
	}
	defer data.Close()
	for _, e := range res.Archives {
		if err := checkZeros(data, e); err != nil {
			return err
		}
		r := io.NewSectionReader(data, int64(e.Offset), int64(e.Size-e.Padding))
		if err := putOnce(ctx, s.Bus.Objects, state.ObjectArchive(c, e.ID), r); err != nil {
			return err
		}
	}
	index, err := os.ReadFile(filepath.Join(dir, archive.IndexFile))
	if err != nil {
		return err
	}
	if err := putOnce(ctx, s.Bus.Objects, state.ObjectIndex(c, res.InfoHash), bytes.NewReader(index)); err != nil {
		return err
	}
	torrent, err := os.ReadFile(l.TorrentPath(id))
	if err != nil {
		return err
	}
	return putOnce(ctx, s.Bus.Objects, state.ObjectTorrent(c, res.InfoHash), bytes.NewReader(torrent))
}

// checkZeros checks that archive e's padding in the data file is zeros, as
// the readers put it back: otherwise the stored archive would not rebuild
// the data the torrent hashes.
func checkZeros(data io.ReaderAt, e archive.Entry) error {
	pad := make([]byte, e.Padding)
	if _, err := data.ReadAt(pad, int64(e.Offset+e.Size-e.Padding)); err != nil {
		return fmt.Errorf("archive %s: read its padding: %w", e.ID, err)
	}
	for i, b := range pad {
		if b != 0 {
			return fmt.Errorf("archive %s: padding byte %d of %d is not zero", e.ID, i, e.Padding)
		}
	}
	return nil
}

// putOnce writes an object unless one of that name exists: names are content
// addressed, so an existing object already holds these bytes.
//
// The look-up and the write are repeated together over a cluster's
// transient errors, the write from r's start each time. That is safe for
// the same reason: an upload that failed half-way leaves only chunks no
// object refers to (the object's meta record goes last), and one that was
// stored after all (its ack lost) is found by the repeated look-up, or, if
// written again, holds the same bytes under the same name. Nothing refers
// to the name until the state commits.
func putOnce(ctx context.Context, objs jetstream.ObjectStore, name string, r io.ReadSeeker) error {
	return bus.Retry(ctx, func(ctx context.Context) error {
		if _, err := objs.GetInfo(ctx, name); err == nil {
			return nil
		} else if !errors.Is(err, jetstream.ErrObjectNotFound) {
			return err
		}
		if _, err := r.Seek(0, io.SeekStart); err != nil {
			return err
		}
		_, err := objs.Put(ctx, jetstream.ObjectMeta{Name: name}, r)
		return err
	})
}
