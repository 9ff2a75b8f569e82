package seeder

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/atomicfile"
	"github.com/archivefleet/archivefleet/internal/state"
)

// Superseded magnets keep working for a grace: when a community's torrent is
// replaced, the seeder keeps serving the old one as a snapshot. A snapshot
// copies nothing but the old index (small): its data is the prefix of the
// community's current data file, which only grows, so the old torrent's
// bytes are still there, unchanged. Snapshots live in
// <DataDir>/.snapshots/<community>/<infohash>/{torrent,index,snapshot.json}
// and come back after a restart while within their grace.

const (
	// DefaultSnapshotGrace is how long a superseded torrent stays served:
	// twice the scheduler's default republish cadence (24h), so a member
	// holding the previous magnet finishes with it.
	DefaultSnapshotGrace = 48 * time.Hour
	// DefaultSnapshotMax is how many superseded torrents a community keeps.
	DefaultSnapshotMax = 4
)

const (
	snapshotsDir    = ".snapshots"
	snapTorrentFile = "torrent"
	snapMetaFile    = "snapshot.json"
)

// snapshot is a superseded torrent still served.
type snapshot struct {
	community  string
	ih         metainfo.Hash
	mi         *metainfo.MetaInfo
	dataLen    int64
	superseded time.Time
	dir        string
	t          *torrent.Torrent // nil until opened
}

type snapshotMeta struct {
	Superseded time.Time `json:"superseded"`
	DataBytes  int64     `json:"dataBytes"`
}

func (s *Service) snapshotsOn() bool {
	return s.Config.SnapshotGrace > 0 && s.Config.SnapshotMax > 0
}

func (s *Service) snapshotRoot(c string) string {
	return filepath.Join(s.Config.DataDir, snapshotsDir, c)
}

// saveSnapshot records the current torrent mi of community c, about to be
// superseded, as a snapshot: its metainfo and a copy of its index, checked
// against its last pieces. The files must still be mi's (call it before the
// new torrent's bytes go into place), its data within the trusted prefix
// that stays in place.
func (s *Service) saveSnapshot(c string, mi *metainfo.MetaInfo, trusted int64, now time.Time) (*snapshot, error) {
	info, err := mi.UnmarshalInfo()
	if err != nil {
		return nil, err
	}
	if len(info.Files) != 2 {
		return nil, fmt.Errorf("torrent has %d files, want 2", len(info.Files))
	}
	if info.Files[0].Length > trusted {
		return nil, fmt.Errorf("its %d bytes of data are not all in the verified prefix (%d bytes)", info.Files[0].Length, trusted)
	}
	folder := filepath.Join(s.Config.DataDir, c)
	index, err := os.ReadFile(filepath.Join(folder, archive.IndexFile))
	if err != nil {
		return nil, err
	}
	dataLen := info.Files[0].Length
	if err := verifyTail(info, filepath.Join(folder, archive.DataFile), index); err != nil {
		return nil, err
	}
	ih := mi.HashInfoBytes()
	root := s.snapshotRoot(c)
	dir := filepath.Join(root, ih.HexString())
	tmp := filepath.Join(root, "."+ih.HexString()+".tmp")
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	var tb bytes.Buffer
	if err := mi.Write(&tb); err != nil {
		return nil, err
	}
	meta, _ := json.Marshal(snapshotMeta{Superseded: now, DataBytes: dataLen})
	for name, b := range map[string][]byte{snapTorrentFile: tb.Bytes(), archive.IndexFile: index, snapMetaFile: meta} {
		if err := atomicfile.WriteFile(filepath.Join(tmp, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return nil, err
	}
	atomicfile.SyncDir(root)
	return &snapshot{community: c, ih: ih, mi: mi, dataLen: dataLen, superseded: now, dir: dir}, nil
}

// verifyTail checks index, with the data file's bytes from the piece the
// index starts in, against the last piece hashes of info: a cheap check that
// a snapshot's own file is the old torrent's index.
func verifyTail(info metainfo.Info, dataPath string, index []byte) error {
	dataLen := info.Files[0].Length
	if int64(len(index)) != info.Files[1].Length {
		return fmt.Errorf("index has %d bytes, torrent says %d", len(index), info.Files[1].Length)
	}
	f, err := os.Open(dataPath)
	if err != nil {
		return err
	}
	defer f.Close()
	first := dataLen / archive.PieceLength
	data := io.NewSectionReader(f, first*archive.PieceLength, dataLen-first*archive.PieceLength)
	return archive.VerifyPieces(info.Pieces, int(first), io.MultiReader(data, bytes.NewReader(index)))
}

// loadSnapshot reads the snapshot in dir of community c, checking its index
// (with the data around it in dataPath) against the torrent's last pieces.
func loadSnapshot(c, dir, dataPath string) (*snapshot, error) {
	var m snapshotMeta
	b, err := os.ReadFile(filepath.Join(dir, snapMetaFile))
	if err == nil {
		err = json.Unmarshal(b, &m)
	}
	if err != nil {
		return nil, err
	}
	mi, err := metainfo.LoadFromFile(filepath.Join(dir, snapTorrentFile))
	if err != nil {
		return nil, err
	}
	ih := mi.HashInfoBytes()
	if ih.HexString() != filepath.Base(dir) {
		return nil, fmt.Errorf("torrent is %s", ih.HexString())
	}
	info, err := mi.UnmarshalInfo()
	if err != nil {
		return nil, err
	}
	if len(info.Files) != 2 || info.Files[0].Length != m.DataBytes {
		return nil, errors.New("torrent does not match the snapshot")
	}
	index, err := os.ReadFile(filepath.Join(dir, archive.IndexFile))
	if err != nil {
		return nil, err
	}
	if err := verifyTail(info, dataPath, index); err != nil {
		return nil, err
	}
	return &snapshot{community: c, ih: ih, mi: mi, dataLen: m.DataBytes, superseded: m.Superseded, dir: dir}, nil
}

// loadSnapshots serves again, after a start, the snapshots still within
// their grace whose data the community's verified prefix holds, and removes
// the others.
func (s *Service) loadSnapshots(ctx context.Context) {
	base := filepath.Join(s.Config.DataDir, snapshotsDir)
	if !s.snapshotsOn() {
		os.RemoveAll(base)
		return
	}
	coms, _ := os.ReadDir(base)
	now := time.Now()
	for _, ce := range coms {
		c := ce.Name()
		root := filepath.Join(base, c)
		dataPath := filepath.Join(s.Config.DataDir, c, archive.DataFile)
		trusted := min(s.marks().Read(c).DataBytes, state.FileSize(dataPath))
		ents, _ := os.ReadDir(root)
		for _, e := range ents {
			dir := filepath.Join(root, e.Name())
			sn, err := loadSnapshot(c, dir, dataPath)
			if err == nil && now.Sub(sn.superseded) >= s.Config.SnapshotGrace {
				err = errors.New("grace over")
			}
			if err == nil && sn.dataLen > trusted {
				err = fmt.Errorf("data is %d bytes, verified %d", sn.dataLen, trusted)
			}
			if err == nil {
				err = s.openSnapshot(sn)
			}
			if err != nil {
				s.Logger.Info("snapshot not served again; removed", "community", c, "snapshot", e.Name(), "reason", err)
				os.RemoveAll(dir)
				continue
			}
			s.mu.Lock()
			s.snaps[c] = append(s.snaps[c], sn)
			slices.SortFunc(s.snaps[c], func(a, b *snapshot) int { return a.superseded.Compare(b.superseded) })
			s.mu.Unlock()
			s.joinSwarm(ctx, sn.ih)
		}
		if len(ents) == 0 {
			os.Remove(root)
		}
	}
	s.expireSnapshots(now)
	s.mu.Lock()
	n := 0
	for _, l := range s.snaps {
		n += len(l)
	}
	s.mu.Unlock()
	if n > 0 {
		s.Logger.Info("superseded torrents served again", "snapshots", n)
	}
}

// openSnapshot adds sn's torrent to the client on snapshot storage; it is
// complete at once, with nothing to hash. Call with s.mu unlocked.
func (s *Service) openSnapshot(sn *snapshot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.openSnapshotLocked(sn)
}

func (s *Service) openSnapshotLocked(sn *snapshot) error {
	spec, err := torrent.TorrentSpecFromMetaInfoErr(sn.mi)
	if err != nil {
		return err
	}
	info, err := sn.mi.UnmarshalInfo()
	if err != nil {
		return err
	}
	if len(info.Files) != 2 || info.Files[0].Length != sn.dataLen {
		return errors.New("torrent does not match the snapshot")
	}
	spec.Storage = snapshotStorage{data: filepath.Join(s.Config.DataDir, sn.community, archive.DataFile), index: filepath.Join(sn.dir, archive.IndexFile)}
	spec.DisallowDataDownload = true
	t, isNew, err := s.client.AddTorrentSpec(spec)
	if err != nil {
		return err
	}
	if !isNew {
		return errors.New("torrent already in the client")
	}
	if !t.Complete().Bool() {
		t.Drop()
		return errors.New("snapshot torrent not complete")
	}
	sn.t = t
	return nil
}

// dropSnapshotsLocked stops serving the snapshots of c for which drop
// reports true and removes their files. Call with s.mu held.
func (s *Service) dropSnapshotsLocked(c string, why string, drop func(i int, sn *snapshot) bool) {
	var keep []*snapshot
	for i, sn := range s.snaps[c] {
		if !drop(i, sn) {
			keep = append(keep, sn)
			continue
		}
		if sn.t != nil {
			st := sn.t.Stats()
			s.snapUploaded += st.BytesWrittenData.Int64()
			sn.t.Drop()
			s.dropped++
			go s.leaveSwarm(sn.ih)
		}
		os.RemoveAll(sn.dir)
		s.metrics.expired.Inc()
		s.Logger.Info("superseded torrent no longer served", "community", c, "infohash", sn.ih.HexString(),
			"superseded", sn.superseded, "reason", why)
	}
	if len(keep) == 0 {
		delete(s.snaps, c)
		os.Remove(s.snapshotRoot(c))
	} else {
		s.snaps[c] = keep
	}
}

// expireSnapshots drops snapshots past their grace and, per community, the
// oldest beyond SnapshotMax.
func (s *Service) expireSnapshots(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c, l := range s.snaps {
		over := len(l) - max(s.Config.SnapshotMax, 0)
		s.dropSnapshotsLocked(c, "grace over or too many", func(i int, sn *snapshot) bool {
			return i < over || now.Sub(sn.superseded) >= s.Config.SnapshotGrace
		})
	}
}

// keepSnapshotsFresh expires snapshots until ctx ends.
func (s *Service) keepSnapshotsFresh(ctx context.Context) {
	every := min(max(s.Config.SnapshotGrace/4, 10*time.Millisecond), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.expireSnapshots(now)
		}
	}
}

// Snapshots returns the infohashes of the superseded torrents still served
// for a community, oldest first.
func (s *Service) Snapshots(c string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, sn := range s.snaps[c] {
		out = append(out, sn.ih.HexString())
	}
	return out
}

// snapshotStorage serves a superseded torrent: its data file is the prefix
// of the community's current data file (which only grows), its index the
// snapshot's copy. Every piece is complete (the torrent was, when
// superseded, and those bytes never change); nothing is ever written.
type snapshotStorage struct{ data, index string }

func (st snapshotStorage) OpenTorrent(_ context.Context, info *metainfo.Info, _ metainfo.Hash) (storage.TorrentImpl, error) {
	if len(info.Files) != 2 {
		return storage.TorrentImpl{}, fmt.Errorf("snapshot torrent has %d files, want 2", len(info.Files))
	}
	data, err := os.Open(st.data)
	if err != nil {
		return storage.TorrentImpl{}, err
	}
	index, err := os.Open(st.index)
	if err != nil {
		data.Close()
		return storage.TorrentImpl{}, err
	}
	f := &snapshotFiles{data: data, index: index, dataLen: info.Files[0].Length, indexLen: info.Files[1].Length}
	return storage.TorrentImpl{
		Piece: func(p metainfo.Piece) storage.PieceImpl { return snapshotPiece{f, p.Offset(), p.Length()} },
		Close: f.Close,
	}, nil
}

type snapshotFiles struct {
	data, index       *os.File
	dataLen, indexLen int64
}

func (f *snapshotFiles) Close() error { return errors.Join(f.data.Close(), f.index.Close()) }

// ReadAt reads the torrent's bytes at offset off: the data file's below
// dataLen (never past it, whatever the file holds now), then the index's.
func (f *snapshotFiles) ReadAt(b []byte, off int64) (n int, err error) {
	for len(b) > 0 {
		var k int
		switch {
		case off < f.dataLen:
			k, err = f.data.ReadAt(b[:min(int64(len(b)), f.dataLen-off)], off)
		case off < f.dataLen+f.indexLen:
			k, err = f.index.ReadAt(b[:min(int64(len(b)), f.dataLen+f.indexLen-off)], off-f.dataLen)
		default:
			return n, io.EOF
		}
		n, off, b = n+k, off+int64(k), b[k:]
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

type snapshotPiece struct {
	f        *snapshotFiles
	off, len int64
}

var errReadOnly = errors.New("superseded torrent snapshot is read-only")

func (p snapshotPiece) ReadAt(b []byte, off int64) (int, error) {
	if off >= p.len {
		return 0, io.EOF
	}
	n, err := p.f.ReadAt(b[:min(int64(len(b)), p.len-off)], p.off+off)
	if err == nil && n < len(b) {
		err = io.EOF
	}
	return n, err
}

func (snapshotPiece) WriteAt([]byte, int64) (int, error) { return 0, errReadOnly }
func (snapshotPiece) MarkComplete() error                { return nil }
func (snapshotPiece) MarkNotComplete() error             { return nil }
func (snapshotPiece) Completion() storage.Completion {
	return storage.Completion{Ok: true, Complete: true}
}
