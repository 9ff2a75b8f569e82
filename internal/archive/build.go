package archive

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/anacrolix/torrent/metainfo"
	"google.golang.org/protobuf/proto"

	"github.com/archivefleet/archivefleet/internal/atomicfile"
	"github.com/archivefleet/archivefleet/internal/pb"
)

// DefaultInterval is status-go's messageArchiveInterval.
const DefaultInterval = 7 * 24 * time.Hour

// Layout places community files as status-go does:
// <DataDir>/<0xid>/{data,index} and <TorrentDir>/<0xid>.torrent.
type Layout struct {
	DataDir    string
	TorrentDir string
}

// ArchiveDir is the folder that is the torrent's content, named like the torrent.
func (l Layout) ArchiveDir(c CommunityID) string { return filepath.Join(l.DataDir, c.String()) }

// TorrentPath is where the community's .torrent is written.
func (l Layout) TorrentPath(c CommunityID) string {
	return filepath.Join(l.TorrentDir, c.String()+".torrent")
}

// BuildOptions describe one archive run: status-go's
// createHistoryArchiveTorrent(communityID, topics, from, to, interval, encrypt).
type BuildOptions struct {
	Community CommunityID
	// Topics are all the community's channel content topics, recorded in every
	// archive's metadata. Messages on other topics are skipped and counted.
	// Empty means: take every message the Source yields.
	Topics []Topic
	// From and To bound the run, [From, To) in unix seconds. From must not be
	// before the end of the newest archive already in the index.
	From, To uint64
	// Interval is the window length; 0 means DefaultInterval. Whole seconds.
	Interval time.Duration
	Source   Source
	// Supplements are windows before From, already archived, that gained late
	// messages. Each becomes archives of its own (chunked like any window)
	// whose metadata range is the window's, appended before the new windows.
	// status-go members download every index entry they lack, oldest From
	// first, and import its messages through their normal, deduplicating
	// pipeline, so a supplement reaches them like any archive.
	Supplements []Window
	// SupplementSource yields a supplement window's late messages, and only
	// those; nil means Source.
	SupplementSource Source
	// Encrypter seals new archives and the index for token-gated communities;
	// nil writes them in the clear.
	Encrypter Encrypter
	// Decrypter opens an existing encrypted index.
	Decrypter Decrypter
	Torrent   TorrentOptions
	// ChunkBytes caps payload+sig per archive; 0 means MaxMessageBytes, status-go's value.
	ChunkBytes int
	Limits     Limits
	// Verify rehashes the existing data instead of reusing the piece hashes of
	// the previous torrent.
	Verify bool
	// BufferedIO writes new data through the page cache even where the file
	// system takes O_DIRECT: for file systems that accept O_DIRECT but are
	// slow with it.
	BufferedIO bool
	Logger     *slog.Logger
}

// Window is a half-open time range [From, To) in unix seconds.
type Window struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
}

// SkippedMessage is a message left out of every archive, and why.
type SkippedMessage struct {
	Hash      HexBytes `json:"hash"`
	Timestamp uint64   `json:"timestamp"`
	Size      int      `json:"size"`
	Reason    string   `json:"reason"`
}

// BuildResult reports what a run did.
type BuildResult struct {
	Community CommunityID `json:"community"`
	From      uint64      `json:"from"`
	// To is the community's new last archive end, advanced even when no
	// archive was created, as status-go does.
	To       uint64  `json:"to"`
	Archives []Entry `json:"-"`
	// ArchiveIDs are the new archives, oldest first.
	ArchiveIDs []string `json:"archiveIds"`
	Messages   int      `json:"messages"`
	// SupplementArchives and LateMessages count what the supplements added;
	// they are included in Archives and Messages.
	SupplementArchives int              `json:"supplementArchives,omitempty"`
	LateMessages       int              `json:"lateMessages,omitempty"`
	Skipped            []SkippedMessage `json:"skipped,omitempty"`
	ForeignTopic       int              `json:"foreignTopic,omitempty"`
	TotalEntries       int              `json:"totalArchives"`
	DataBytes          int64            `json:"dataBytes"`
	IndexBytes         int64            `json:"indexBytes"`
	InfoHash           string           `json:"infoHash,omitempty"`
	Magnet             string           `json:"magnet,omitempty"`
	TorrentPath        string           `json:"torrentPath,omitempty"`
	// PiecesHashed counts pieces hashed in this run; PiecesReused those taken
	// from the previous torrent.
	PiecesHashed int `json:"piecesHashed"`
	PiecesReused int `json:"piecesReused"`
	// DirectIOBytes is how much of the new data went to disk with O_DIRECT,
	// bypassing the page cache; the rest was written through it.
	DirectIOBytes int64 `json:"directIoBytes,omitempty"`
	// DiscardedTail is bytes of data past the index's last archive, left by an
	// interrupted run and truncated before appending.
	DiscardedTail int64 `json:"discardedTail,omitempty"`
}

// Errors a caller may act on.
var (
	ErrOverlap        = errors.New("range overlaps archives already built")
	ErrEncryptedNoKey = errors.New("index is encrypted and no decrypter was given")
)

// Build appends the archives of [From, To) to the community's data file,
// rewrites its index and torrent, and returns the magnet link. A failed or
// interrupted run leaves the previous index and torrent in place; its partial
// data tail is cut off by the next run.
func Build(ctx context.Context, l Layout, o BuildOptions) (*BuildResult, error) {
	b, err := newBuilder(l, o)
	if err != nil {
		return nil, fmt.Errorf("archive %s: %w", o.Community, err)
	}
	res, err := b.run(ctx)
	if err != nil {
		return nil, fmt.Errorf("archive %s: %w", o.Community, err)
	}
	return res, nil
}

type builder struct {
	o         BuildOptions
	dir       string
	dataPath  string
	indexPath string
	torrent   string
	topics    map[Topic]bool
	topicsRaw [][]byte
	interval  uint64
	res       *BuildResult

	entries []Entry // existing, by offset
	offset  uint64
	app     *appender
	out     *stream
	pieces  []byte // every data piece's hash, once app has finished

	// The archive being written: its metadata once it has a message, where it
	// started in the stream, its messages and their payload+sig bytes. Only
	// sealed archives keep the messages; plain ones are encoded as they come.
	md      *pb.WakuMessageArchiveMetadata
	start   uint64
	count   int
	chunk   []Message
	chunkSz int
}

func newBuilder(l Layout, o BuildOptions) (*builder, error) {
	if o.Source == nil {
		return nil, errors.New("no message source")
	}
	if o.From >= o.To {
		return nil, fmt.Errorf("empty range: from %d is not before to %d", o.From, o.To)
	}
	if o.Interval == 0 {
		o.Interval = DefaultInterval
	}
	if o.Interval < time.Second || o.Interval%time.Second != 0 {
		return nil, fmt.Errorf("interval %v is not a positive whole number of seconds", o.Interval)
	}
	if o.ChunkBytes <= 0 {
		o.ChunkBytes = MaxMessageBytes
	}
	if o.SupplementSource == nil {
		o.SupplementSource = o.Source
	}
	o.Supplements = slices.Clone(o.Supplements)
	slices.SortFunc(o.Supplements, func(a, b Window) int { return cmp.Compare(a.From, b.From) })
	for i, w := range o.Supplements {
		switch {
		case w.From >= w.To:
			return nil, fmt.Errorf("supplement [%d, %d) is empty", w.From, w.To)
		case w.To > o.From:
			return nil, fmt.Errorf("supplement [%d, %d) reaches past the run's start %d", w.From, w.To, o.From)
		case i > 0 && w.From < o.Supplements[i-1].To:
			return nil, fmt.Errorf("supplements [%d, %d) and [%d, %d) overlap", o.Supplements[i-1].From, o.Supplements[i-1].To, w.From, w.To)
		}
	}
	o.Limits = o.Limits.orDefault()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	b := &builder{
		o:        o,
		dir:      l.ArchiveDir(o.Community),
		torrent:  l.TorrentPath(o.Community),
		interval: uint64(o.Interval / time.Second),
		res:      &BuildResult{Community: o.Community, From: o.From, To: o.To},
	}
	b.dataPath = filepath.Join(b.dir, DataFile)
	b.indexPath = filepath.Join(b.dir, IndexFile)
	if len(o.Topics) > 0 {
		b.topics = make(map[Topic]bool, len(o.Topics))
		for _, t := range o.Topics {
			b.topics[t] = true
			b.topicsRaw = append(b.topicsRaw, bytes.Clone(t[:]))
		}
	}
	return b, nil
}

func (b *builder) run(ctx context.Context) (*BuildResult, error) {
	for _, d := range []string{b.dir, filepath.Dir(b.torrent)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	// The community's own folder holds a few files; the torrents folder
	// is shared by every community, so only this torrent's temp file is
	// looked for there (a process sweeps the rest once at start).
	atomicfile.SweepStale(b.dir)
	atomicfile.RemoveStale(filepath.Dir(b.torrent), filepath.Base(b.torrent))

	oldIndex, err := b.loadIndex()
	if err != nil {
		return nil, err
	}
	if err := b.checkRange(); err != nil {
		return nil, err
	}
	data, err := b.openData()
	if err != nil {
		return nil, err
	}
	defer data.Close()

	prefix, err := b.previousPieces(oldIndex)
	if err != nil {
		return nil, err
	}
	b.app = newAppender(data, int64(b.offset), !b.o.BufferedIO)
	defer b.app.finish()
	b.out = &stream{app: b.app}
	if err := b.archiveWindows(ctx); err != nil {
		return nil, err
	}
	if err := b.out.close(); err != nil {
		return nil, err
	}
	added, err := b.app.finish()
	if err != nil {
		return nil, err
	}
	b.pieces = append(prefix, added...)
	b.res.DirectIOBytes = b.app.directBytes
	b.res.PiecesHashed += len(added) / sha1.Size
	if len(b.res.Archives) == 0 {
		b.o.Logger.Info("no new archives", "from", b.o.From, "to", b.o.To)
		return b.finishUnchanged(data, oldIndex)
	}
	if err := data.Sync(); err != nil {
		return nil, fmt.Errorf("sync data: %w", err)
	}
	return b.commit(data)
}

// loadIndex reads and checks the existing index, returning its bytes on disk.
func (b *builder) loadIndex() ([]byte, error) {
	raw, err := os.ReadFile(b.indexPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	ix, err := DecodeIndex(raw, b.o.Decrypter, -1, b.o.Limits)
	if err != nil {
		return nil, fmt.Errorf("existing index: %w", err)
	}
	b.entries = ix.Entries
	for _, e := range b.entries {
		if e.Offset != b.offset {
			return nil, fmt.Errorf("existing index: archive %s starts at %d, not at %d: cannot append to a data file with gaps", e.ID, e.Offset, b.offset)
		}
		b.offset += e.Size
	}
	b.res.TotalEntries = len(b.entries)
	return raw, nil
}

func (b *builder) checkRange() error {
	var last uint64
	for _, e := range b.entries {
		last = max(last, e.To)
	}
	if b.o.From < last {
		return fmt.Errorf("%w: from %d is before %d, the end of the newest archive", ErrOverlap, b.o.From, last)
	}
	return nil
}

// openData opens the data file, cutting off bytes an interrupted run appended
// without indexing, so that it ends where the last indexed archive does.
// Writes go to explicit offsets from there (see appender).
func (b *builder) openData() (*os.File, error) {
	f, err := os.OpenFile(b.dataPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	size := uint64(st.Size())
	switch {
	case size < b.offset:
		f.Close()
		return nil, fmt.Errorf("data file has %d bytes but the index covers %d: data is missing", size, b.offset)
	case size > b.offset:
		b.res.DiscardedTail = int64(size - b.offset)
		b.o.Logger.Warn("discarding unindexed data tail from an interrupted run", "bytes", b.res.DiscardedTail)
		if err := f.Truncate(int64(b.offset)); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

// previousPieces returns the SHA-1 hashes of the existing data pieces: from the
// previous torrent when it matches the files, else by hashing the data.
// Archives are piece-aligned, so these never change when data grows.
func (b *builder) previousPieces(oldIndex []byte) ([]byte, error) {
	n := int64(b.offset)
	if n == 0 {
		return nil, nil
	}
	if !b.o.Verify {
		if p, ok := b.trustedPieces(oldIndex); ok {
			b.res.PiecesReused = len(p) / sha1.Size
			return p, nil
		}
		b.o.Logger.Info("previous torrent missing or stale: rehashing existing data", "bytes", n)
	}
	p, err := hashFilePrefix(b.dataPath, n)
	if err != nil {
		return nil, err
	}
	b.res.PiecesHashed += len(p) / sha1.Size
	return p, nil
}

func (b *builder) trustedPieces(oldIndex []byte) ([]byte, bool) {
	mi, err := metainfo.LoadFromFile(b.torrent)
	if err != nil {
		return nil, false
	}
	info, err := mi.UnmarshalInfo()
	if err != nil {
		return nil, false
	}
	dataLen, indexLen := int64(b.offset), int64(len(oldIndex))
	ok := info.Name == b.o.Community.String() && info.PieceLength == PieceLength &&
		len(info.Files) == 2 &&
		len(info.Files[0].Path) == 1 && info.Files[0].Path[0] == DataFile && info.Files[0].Length == dataLen &&
		len(info.Files[1].Path) == 1 && info.Files[1].Path[0] == IndexFile && info.Files[1].Length == indexLen &&
		len(info.Pieces) == sha1.Size*int((dataLen+indexLen+PieceLength-1)/PieceLength)
	if !ok {
		return nil, false
	}
	return bytes.Clone(info.Pieces[:sha1.Size*int(dataLen/PieceLength)]), true
}

// archiveWindows walks [From, To) in Interval windows anchored at From, as
// status-go does, skipping empty windows and chunking full ones.
func (b *builder) archiveWindows(ctx context.Context) error {
	for _, w := range b.o.Supplements {
		archives, messages := len(b.res.Archives), b.res.Messages
		if err := b.window(ctx, b.o.SupplementSource, w.From, w.To); err != nil {
			return fmt.Errorf("supplement: %w", err)
		}
		b.res.SupplementArchives += len(b.res.Archives) - archives
		b.res.LateMessages += b.res.Messages - messages
	}
	for from := b.o.From; from < b.o.To; {
		to := min(from+b.interval, b.o.To)
		if to < from { // overflow
			to = b.o.To
		}
		if err := b.window(ctx, b.o.Source, from, to); err != nil {
			return err
		}
		from = to
	}
	return nil
}

// window archives the messages src yields for [from, to), chunked.
func (b *builder) window(ctx context.Context, src Source, from, to uint64) error {
	for m, err := range src.Messages(ctx, from, to) {
		if err != nil {
			return fmt.Errorf("read messages [%d, %d): %w", from, to, err)
		}
		if err := b.add(from, to, m); err != nil {
			return err
		}
	}
	if err := b.flush(from, to); err != nil {
		return err
	}
	return ctx.Err()
}

func (b *builder) add(from, to uint64, m Message) error {
	if m.Timestamp < from || m.Timestamp >= to {
		return fmt.Errorf("source returned message %s at %d outside window [%d, %d)", m.Hash, m.Timestamp, from, to)
	}
	if b.topics != nil && !b.topics[m.Topic] {
		b.res.ForeignTopic++
		return nil
	}
	size := m.Size()
	if size > b.o.ChunkBytes {
		// status-go drops these silently; we drop them loudly.
		b.skip(&m, fmt.Sprintf("payload+sig of %d bytes exceeds the %d-byte archive cap", size, b.o.ChunkBytes))
		return nil
	}
	if !utf8.ValidString(m.ThirdPartyID) {
		// proto3 strings must be UTF-8: a member could not decode the archive.
		b.skip(&m, "thirdPartyId is not valid UTF-8")
		return nil
	}
	if b.chunkSz+size > b.o.ChunkBytes {
		if err := b.flush(from, to); err != nil {
			return err
		}
	}
	if b.md == nil {
		if err := b.begin(from, to); err != nil {
			return err
		}
	}
	if b.o.Encrypter != nil {
		b.chunk = append(b.chunk, m)
	} else if err := b.out.message(&m); err != nil {
		return err
	}
	b.count++
	b.chunkSz += size
	return nil
}

func (b *builder) skip(m *Message, reason string) {
	b.res.Skipped = append(b.res.Skipped, SkippedMessage{Hash: m.Hash, Timestamp: m.Timestamp, Size: m.Size(), Reason: reason})
	b.o.Logger.Warn("message cannot be archived: skipped", "hash", m.Hash.String(), "timestamp", m.Timestamp, "bytes", m.Size(), "reason", reason)
}

// begin starts an archive of window [from, to). A plain archive's encoding is
// written at once: its metadata field, then one field per message, exactly
// what the deterministic marshalling of the whole WakuMessageArchive gives.
func (b *builder) begin(from, to uint64) error {
	b.md = &pb.WakuMessageArchiveMetadata{From: from, To: to, ContentTopic: b.topicsRaw}
	b.start = b.out.n
	if b.o.Encrypter != nil {
		return nil
	}
	return b.out.metadata(b.md)
}

// flush ends the archive being written, padding it to whole pieces; with no
// archive begun it writes nothing.
func (b *builder) flush(from, to uint64) error {
	if b.md == nil {
		return nil
	}
	if b.o.Encrypter != nil {
		if err := b.seal(); err != nil {
			return fmt.Errorf("archive [%d, %d): %w", from, to, err)
		}
	}
	size, padding := paddedSize(int(b.out.n - b.start))
	if err := b.out.zeros(padding); err != nil {
		return err
	}
	e, err := newEntry(b.md, b.offset, size, padding)
	if err != nil {
		return err
	}
	b.offset += size
	b.res.Archives = append(b.res.Archives, e)
	b.res.ArchiveIDs = append(b.res.ArchiveIDs, e.ID)
	b.res.Messages += b.count
	b.o.Logger.Debug("archive written", "id", e.ID, "from", from, "to", to, "messages", b.count, "bytes", size)
	clear(b.chunk)
	b.md, b.count, b.chunk, b.chunkSz = nil, 0, b.chunk[:0], 0
	return nil
}

// seal marshals and encrypts the collected messages of a token-gated archive.
func (b *builder) seal() error {
	arch := &pb.WakuMessageArchive{Metadata: b.md, Messages: make([]*pb.WakuMessage, len(b.chunk))}
	for i := range b.chunk {
		arch.Messages[i] = b.chunk[i].toProto()
	}
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(arch)
	if err != nil {
		return fmt.Errorf("marshal: %w", err)
	}
	// The messages are in raw now: let them go before encryption copies it twice.
	clear(b.chunk)
	if raw, err = b.o.Encrypter.Encrypt(raw); err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	_, err = b.out.Write(raw)
	return err
}

// commit writes the index, then the torrent, each atomically. The data file
// was synced first, so a crash leaves either the old index (and the tail is
// cut next run) or the new index with a stale torrent (rehashed next run).
func (b *builder) commit(data *os.File) (*BuildResult, error) {
	all := slices.Concat(b.entries, b.res.Archives)
	index := encodeIndex(all)
	if b.o.Encrypter != nil {
		var err error
		if index, err = b.o.Encrypter.Encrypt(index); err != nil {
			return nil, fmt.Errorf("encrypt index: %w", err)
		}
	}
	if err := atomicfile.WriteFile(b.indexPath, index, 0o644); err != nil {
		return nil, fmt.Errorf("write index: %w", err)
	}
	b.res.TotalEntries = len(all)
	return b.writeTorrent(index)
}

// finishUnchanged handles a run that created no archive: the files stay as
// they are; the torrent is rewritten only if missing or stale.
func (b *builder) finishUnchanged(data *os.File, oldIndex []byte) (*BuildResult, error) {
	if oldIndex == nil {
		if err := data.Close(); err != nil {
			return nil, err
		}
		if b.offset == 0 {
			os.Remove(b.dataPath) // no index, no archives: leave no empty data file behind
		}
		return b.res, nil
	}
	return b.writeTorrent(oldIndex)
}

// writeTorrent hashes the index onto the data pieces and writes the torrent.
// The data ends on a piece boundary, so the index starts a fresh piece.
func (b *builder) writeTorrent(index []byte) (*BuildResult, error) {
	dataLen := int64(b.offset)
	pieces := appendPieceSums(b.pieces, index)
	b.res.PiecesHashed += (len(index) + PieceLength - 1) / PieceLength
	mi, info, err := metaInfo(b.o.Community, dataLen, int64(len(index)), pieces, b.o.Torrent)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := mi.Write(&buf); err != nil {
		return nil, fmt.Errorf("encode torrent: %w", err)
	}
	if err := atomicfile.WriteFile(b.torrent, buf.Bytes(), 0o644); err != nil {
		return nil, fmt.Errorf("write torrent: %w", err)
	}
	b.res.DataBytes, b.res.IndexBytes = dataLen, int64(len(index))
	b.res.InfoHash = mi.HashInfoBytes().HexString()
	b.res.Magnet = Magnet(mi, info.Name, b.o.Torrent.Peers)
	b.res.TorrentPath = b.torrent
	b.o.Logger.Info("torrent written", "infohash", b.res.InfoHash, "archives", len(b.res.Archives),
		"total_archives", b.res.TotalEntries, "data_bytes", dataLen, "pieces_hashed", b.res.PiecesHashed,
		"pieces_reused", b.res.PiecesReused, "direct_io_bytes", b.res.DirectIOBytes)
	return b.res, nil
}
