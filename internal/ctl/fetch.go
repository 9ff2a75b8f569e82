package ctl

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	g "github.com/anacrolix/generics"
	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"
	"golang.org/x/crypto/sha3"
	"google.golang.org/protobuf/proto"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/atomicfile"
	"github.com/archivefleet/archivefleet/internal/pb"
)

// Files fetch keeps in <dir>/<community>/ beside the torrent's data and index.
const (
	fetchSeenFile     = "seen.json"
	fetchMessagesFile = "messages.jsonl"
)

// statusGoMetadataTimeout is how long status-go's
// DownloadHistoryArchivesByMagnetlink waits for a magnet's metadata.
const statusGoMetadataTimeout = 20 * time.Second

// fetchRedial is how often peers given directly (-peer, x.pe) are dialled
// again while no peer is connected.
const fetchRedial = 5 * time.Second

// memberRecord is <dir>/<community>/seen.json: the archives a member has
// imported (status-go's community_message_archive_hashes) and how long
// messages.jsonl was after the last import, so that an interrupted append
// is cut off on the next run instead of duplicating messages.
type memberRecord struct {
	Community     string   `json:"community"`
	Archives      []string `json:"archives"` // in import order
	MessagesBytes int64    `json:"messagesBytes"`
	LastMagnet    string   `json:"lastMagnet,omitempty"`
	InfoHash      string   `json:"infoHash,omitempty"`
}

// fetchResult is what fetch prints on stdout.
type fetchResult struct {
	Community string `json:"community"`
	InfoHash  string `json:"infoHash"`
	// Archives is the number in the index; AlreadyImported of them were in
	// seen.json before this run.
	Archives        int `json:"archives"`
	AlreadyImported int `json:"alreadyImported"`
	// Imported are the archives imported by this run, oldest first, with
	// Messages messages in all appended to MessagesFile.
	Imported     []string         `json:"imported"`
	Messages     int              `json:"messages"`
	Skipped      []skippedArchive `json:"skipped,omitempty"`
	MessagesFile string           `json:"messagesFile"`
	// PiecesDownloaded counts the pieces fetched and hash-checked (index
	// included); BytesDownloaded the piece data received from peers.
	PiecesDownloaded int   `json:"piecesDownloaded"`
	BytesDownloaded  int64 `json:"bytesDownloaded"`
}

type skippedArchive struct {
	ID     string `json:"id"`
	From   uint64 `json:"from"`
	To     uint64 `json:"to"`
	Reason string `json:"reason"`
}

// runFetch downloads a community's archives from a magnet link as a status-go
// member does (DownloadHistoryArchivesByMagnetlink, then the import): wait
// for the metadata, download the index file alone, diff its archive ids
// against the member's record, then download only the missing archives'
// piece ranges, oldest first, and import each: its messages are appended to
// messages.jsonl and its id recorded in seen.json. Unlike status-go, which
// stops when the index holds as many archives as the record (a count, not a
// set), the ids are compared.
func runFetch(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "fetch", "[flags] MAGNET")
	dir := fs.String("dir", "data/member", "member folder: the torrent goes to <dir>/<community>/{data,index}, beside messages.jsonl and seen.json")
	var peers, ratchetKeys listFlag
	fs.Var(&peers, "peer", "host:port of a peer to dial, repeatable (the magnet's x.pe peers are dialled too)")
	dht := fs.Bool("dht", false, "find peers on the mainline DHT as well")
	noTrackers := fs.Bool("no-trackers", false, "do not announce to the magnet's trackers")
	listen := fs.String("listen", ":0", "host:port the torrent client listens on")
	metaTimeout := fs.Duration("metadata-timeout", statusGoMetadataTimeout, "how long to wait for the torrent's metadata from peers (status-go's value)")
	stall := fs.Duration("stall-timeout", 2*time.Minute, "give up when no piece data arrives for this long (0: wait forever, as status-go does)")
	keys := fs.String("keys", "", "hash-ratchet key file (see build -keys) for an encrypted community")
	fs.Var(&ratchetKeys, "ratchet-key", "community hash-ratchet key [TIMESTAMP_MS:]HEX, repeatable; without the timestamp it is found from the sealed archives' headers")
	quiet := fs.Bool("quiet", false, "no progress on stderr")
	showProgress := fs.Bool("progress", false, "progress on stderr even when it is not a terminal (a line per step)")
	verbose := fs.Bool("v", false, "log the torrent client's debug messages")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	magnet := fs.Arg(0)
	m, err := metainfo.ParseMagnetUri(magnet)
	if err != nil {
		return fmt.Errorf("bad magnet link %q: %v", truncateString(magnet, 120), err)
	}
	for _, p := range peers {
		if err := checkHostPort(p); err != nil {
			return fmt.Errorf("-peer %q: %v", p, err)
		}
	}
	listenHost, port, err := parseListen(*listen)
	if err != nil {
		return err
	}
	timed, untimed, err := parseRatchetKeys(ratchetKeys)
	if err != nil {
		return err
	}
	if *metaTimeout <= 0 {
		return errors.New("-metadata-timeout must be positive")
	}

	f := &fetcher{
		env: env, dir: *dir, magnet: magnet, m: m, peers: peers, dht: *dht, noTrackers: *noTrackers,
		stall: *stall, keysFile: *keys, timedKeys: timed, untimedKeys: untimed,
		progress: newProgressLine(env.Stderr, !*quiet && (*showProgress || isTerminal(env.Stderr))),
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	lvl := slog.LevelError
	if *verbose {
		lvl = slog.LevelDebug
	}
	if err := f.startClient(listenHost, port, slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: lvl}))); err != nil {
		return err
	}
	defer f.close()
	res, err := f.run(ctx, *metaTimeout)
	f.progress.clear()
	if res != nil {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		if eerr := enc.Encode(res); eerr != nil && err == nil {
			err = eerr
		}
	}
	return err
}

type fetcher struct {
	env         Env
	dir         string
	magnet      string
	m           metainfo.Magnet
	peers       []string
	dht         bool
	noTrackers  bool
	stall       time.Duration
	keysFile    string
	timedKeys   []archive.RatchetKey
	untimedKeys [][]byte
	progress    *progressLine
	// onStage, when set, is called as run reaches a stage: "metadata" (the
	// torrent's info arrived) and "index" (the index is downloaded and
	// decoded). The prober times them.
	onStage func(stage string)

	cl    *torrent.Client
	store storage.ClientImplCloser
	t     *torrent.Torrent
}

// startClient starts the anacrolix client. Its storage writes the torrent's
// files in place under dir/<torrent name>/ and treats every piece as missing
// until downloaded and hash-checked here: nothing is hashed at start (an old
// data file may be large), and only the pieces asked for are fetched.
func (f *fetcher) startClient(host string, port int, log *slog.Logger) error {
	cfg := torrent.NewDefaultClientConfig()
	cfg.ListenHost = func(string) string { return host }
	cfg.ListenPort = port
	if ip := net.ParseIP(host); ip != nil && ip.To4() != nil {
		cfg.DisableIPv6 = true // an IPv4 listen address has no IPv6 twin
	}
	cfg.NoDHT = !f.dht
	cfg.DisableTrackers = f.noTrackers
	cfg.NoDefaultPortForwarding = true
	cfg.Seed = false
	cfg.DataDir = f.dir
	cfg.Slogger = log.With("component", "torrent")
	f.store = storage.NewFileOpts(storage.NewFileClientOpts{
		ClientBaseDir: f.dir, UsePartFiles: g.Some(false), PieceCompletion: freshCompletion{storage.NewMapPieceCompletion()},
		Logger: cfg.Slogger,
	})
	cfg.DefaultStorage = f.store
	cl, err := torrent.NewClient(cfg)
	if err != nil {
		f.store.Close()
		return fmt.Errorf("torrent client: %w", err)
	}
	f.cl = cl
	return nil
}

func (f *fetcher) close() {
	f.cl.Close()
	f.store.Close()
}

func (f *fetcher) run(ctx context.Context, metaTimeout time.Duration) (*fetchResult, error) {
	spec, err := torrent.TorrentSpecFromMagnetUri(f.magnet)
	if err != nil {
		return nil, fmt.Errorf("bad magnet link: %v", err)
	}
	spec.DisableInitialPieceCheck = true
	if f.noTrackers {
		spec.Trackers = nil
	}
	t, _, err := f.cl.AddTorrentSpec(spec)
	if err != nil {
		return nil, err
	}
	f.t = t
	f.dialPeers()

	// Metadata (BEP 9), at most metaTimeout as status-go.
	f.progress.update(true, fmt.Sprintf("metadata of %s: waiting for peers", f.m.InfoHash.HexString()))
	timer := time.NewTimer(metaTimeout)
	defer timer.Stop()
	redial := time.NewTicker(fetchRedial)
	defer redial.Stop()
wait:
	for {
		select {
		case <-t.GotInfo():
			break wait
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			st := t.Stats()
			why := "no peer reachable"
			if st.ActivePeers > 0 {
				why = fmt.Sprintf("%d peers connected but none sent it", st.ActivePeers)
			}
			return nil, fmt.Errorf("no metadata for %s within %v: %s (%s)", f.m.InfoHash.HexString(), metaTimeout, why, f.peerSummary())
		case <-redial.C:
			if st := t.Stats(); st.ActivePeers == 0 && st.HalfOpenPeers == 0 {
				f.dialPeers()
			}
		}
	}
	f.stage("metadata")
	info := t.Info()
	name := info.BestName()
	c, err := archive.ParseCommunityID(name)
	if err != nil {
		return nil, fmt.Errorf("not a community archive torrent: its name %q is not a community id", truncateString(name, 80))
	}
	if info.PieceLength != archive.PieceLength {
		return nil, fmt.Errorf("torrent piece length is %d: status-go members assume %d", info.PieceLength, archive.PieceLength)
	}
	var dataFile, indexFile *torrent.File
	for i, tf := range t.Files() {
		switch tf.DisplayPath() {
		case archive.DataFile:
			if i == 0 && tf.Offset() == 0 {
				dataFile = tf
			}
		case archive.IndexFile:
			indexFile = tf
		}
	}
	if indexFile == nil || dataFile == nil {
		return nil, errors.New("malformed torrent data: want a first file named data and a file named index")
	}
	folder := filepath.Join(f.dir, name)
	res := &fetchResult{Community: c.String(), InfoHash: t.InfoHash().HexString(), Imported: []string{},
		MessagesFile: filepath.Join(folder, fetchMessagesFile)}
	defer func() {
		st := t.Stats()
		res.PiecesDownloaded, res.BytesDownloaded = st.PiecesComplete, st.BytesReadUsefulData.Int64()
	}()

	rec, err := f.loadRecord(folder, c)
	if err != nil {
		return nil, err
	}
	dec, err := f.decrypter(c)
	if err != nil {
		return nil, err
	}

	// The index file alone first.
	if indexFile.Length() > int64(archive.DefaultLimits.MaxIndexBytes) {
		return nil, fmt.Errorf("index file of %d bytes is over the %d-byte limit", indexFile.Length(), archive.DefaultLimits.MaxIndexBytes)
	}
	indexFile.SetPriority(torrent.PiecePriorityNormal)
	if err := f.waitPieces(ctx, "index", indexFile.BeginPieceIndex(), indexFile.EndPieceIndex()); err != nil {
		return nil, err
	}
	raw, err := readTorrentFile(ctx, indexFile)
	if err != nil {
		return nil, fmt.Errorf("read index: %w", err)
	}
	// A longer index of an earlier torrent may lie under the new one.
	if err := os.Truncate(filepath.Join(folder, archive.IndexFile), indexFile.Length()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	ix, err := archive.DecodeIndex(raw, dec, dataFile.Length(), archive.Limits{})
	switch {
	case errors.Is(err, archive.ErrEncryptedNoKey):
		return nil, errors.New("the index is encrypted (a token-gated community): give the community's key with -ratchet-key or -keys")
	case errors.Is(err, archive.ErrKeyNotFound):
		return nil, fmt.Errorf("the index is encrypted with a key not given: %v", err)
	case err != nil:
		return nil, fmt.Errorf("index: %w", err)
	}
	f.stage("index")
	seen := make(map[string]bool, len(rec.Archives))
	for _, id := range rec.Archives {
		seen[id] = true
	}
	var missing []archive.Entry
	for _, e := range ix.ByFrom() {
		if seen[e.ID] {
			res.AlreadyImported++
		} else {
			missing = append(missing, e)
		}
	}
	res.Archives = len(ix.Entries)
	enc := ""
	if ix.Encrypted {
		enc = ", encrypted"
	}
	f.progress.done(fmt.Sprintf("index: %d archives%s, %d already imported, %d to fetch", len(ix.Entries), enc, res.AlreadyImported, len(missing)))

	// Then each missing archive's pieces, oldest first, imported one by one.
	rec.LastMagnet, rec.InfoHash = f.magnet, res.InfoHash
	var data *os.File
	defer func() {
		if data != nil {
			data.Close()
		}
	}()
	for i, e := range missing {
		start, end := e.Pieces()
		what := fmt.Sprintf("archive %d/%d %s [%s, %s)", i+1, len(missing), shortArchiveID(e.ID), ts(e.From), ts(e.To))
		t.DownloadPieces(start, end)
		if err := f.waitPieces(ctx, what, start, end); err != nil {
			return res, err
		}
		if data == nil {
			if data, err = os.Open(filepath.Join(folder, archive.DataFile)); err != nil {
				return res, err
			}
		}
		a, reason := readFetched(data, e, dec)
		if a == nil {
			f.progress.clear()
			fmt.Fprintf(f.env.Stderr, "archive %s [%s, %s) skipped: %s\n", e.ID, ts(e.From), ts(e.To), reason)
			res.Skipped = append(res.Skipped, skippedArchive{ID: e.ID, From: e.From, To: e.To, Reason: reason})
			continue
		}
		size, err := appendMessages(res.MessagesFile, a.Messages)
		if err != nil {
			return res, fmt.Errorf("archive %s: %w", e.ID, err)
		}
		rec.Archives, rec.MessagesBytes = append(rec.Archives, e.ID), size
		if err := saveRecord(folder, rec); err != nil {
			return res, err
		}
		res.Imported = append(res.Imported, e.ID)
		res.Messages += len(a.Messages)
		f.progress.done(fmt.Sprintf("%s: %d pieces, %d messages imported", what, end-start, len(a.Messages)))
	}
	if len(missing) == 0 {
		if err := saveRecord(folder, rec); err != nil {
			return res, err
		}
	}
	if n := len(res.Skipped); n > 0 {
		return res, fmt.Errorf("%d of %d archives not imported (see skipped); a later run fetches them again", n, len(missing))
	}
	return res, nil
}

func (f *fetcher) stage(s string) {
	if f.onStage != nil {
		f.onStage(s)
	}
}

// readFetched reads and decodes a downloaded archive, checking that it is the
// window the index says; on failure it returns why.
func readFetched(data io.ReaderAt, e archive.Entry, dec archive.Decrypter) (*archive.Archive, string) {
	buf := make([]byte, e.Size-e.Padding)
	if _, err := data.ReadAt(buf, int64(e.Offset)); err != nil {
		return nil, fmt.Sprintf("read: %v", err)
	}
	a, err := archive.DecodeArchive(buf, dec)
	switch {
	case err != nil && dec == nil && sealed(buf):
		return nil, "encrypted (a token-gated community): give the community's key with -ratchet-key or -keys"
	case errors.Is(err, archive.ErrKeyNotFound):
		return nil, fmt.Sprintf("encrypted with a key not given: %v", err)
	case err != nil:
		return nil, fmt.Sprintf("does not decode: %v", err)
	case a.From != e.From || a.To != e.To:
		return nil, fmt.Sprintf("malformed: archive window [%d, %d) differs from the index's [%d, %d)", a.From, a.To, e.From, e.To)
	}
	return a, ""
}

// sealed tells whether b is a hash-ratchet ProtocolMessage, as a token-gated
// community's archives are.
func sealed(b []byte) bool {
	var pm pb.ProtocolMessage
	return proto.Unmarshal(b, &pm) == nil && pm.GetEncryptedMessage()["none"].GetHRHeader() != nil
}

// waitPieces waits until pieces [begin, end) are downloaded and hash-checked,
// showing progress. While no peer is connected the direct peers are dialled
// again every few seconds; with no piece data for the stall timeout it gives
// up.
func (f *fetcher) waitPieces(ctx context.Context, what string, begin, end int) error {
	var total int64
	for i := begin; i < end; i++ {
		total += f.t.Piece(i).Info().Length()
	}
	lastRead, since, lastDial := int64(-1), time.Now(), time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		done, missing := 0, int64(0)
		for i := begin; i < end; i++ {
			if f.t.PieceState(i).Complete {
				done++
			} else {
				missing += f.t.PieceBytesMissing(i)
			}
		}
		if done == end-begin {
			return nil
		}
		f.progress.update(false, fmt.Sprintf("%s: %d/%d pieces, %s/%s", what, done, end-begin, byteSize(total-missing), byteSize(total)))
		st := f.t.Stats()
		if n := st.BytesReadData.Int64(); n != lastRead {
			lastRead, since = n, time.Now()
		} else if f.stall > 0 && time.Since(since) > f.stall {
			why := "no peer connected"
			if st.ActivePeers > 0 {
				why = fmt.Sprintf("%d peers connected, none sending the missing pieces", st.ActivePeers)
			}
			return fmt.Errorf("%s: no piece data for %v at %d of %d pieces: %s (%s)", what, f.stall, done, end-begin, why, f.peerSummary())
		}
		if st.ActivePeers == 0 && st.HalfOpenPeers == 0 && time.Since(lastDial) > fetchRedial {
			f.dialPeers()
			lastDial = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// dialPeers adds the -peer addresses and the magnet's x.pe peers.
func (f *fetcher) dialPeers() {
	var pi []torrent.PeerInfo
	for _, a := range slices.Concat(f.peers, f.m.Params["x.pe"]) {
		pi = append(pi, torrent.PeerInfo{Addr: torrent.StringAddr(a), Source: torrent.PeerSourceDirect, Trusted: true})
	}
	if len(pi) > 0 {
		f.t.AddPeers(pi)
	}
}

func (f *fetcher) peerSummary() string {
	st := f.t.Stats()
	dht, trackers := "DHT off", fmt.Sprintf("%d trackers", len(f.m.Trackers))
	if f.dht {
		dht = "DHT on"
	}
	if f.noTrackers {
		trackers = "trackers off"
	}
	return fmt.Sprintf("%d connected, %d known; %s, %s, %d direct peers (-peer, x.pe)", st.ActivePeers, len(f.t.KnownSwarm()),
		dht, trackers, len(f.peers)+len(f.m.Params["x.pe"]))
}

// decrypter returns the keys given for community c, or nil.
func (f *fetcher) decrypter(c archive.CommunityID) (archive.Decrypter, error) {
	if f.keysFile == "" && len(f.timedKeys) == 0 && len(f.untimedKeys) == 0 {
		return nil, nil
	}
	hr := &archive.HashRatchet{Community: c}
	if f.keysFile != "" {
		r, _, err := loadKeys(f.keysFile, c)
		if err != nil {
			return nil, err
		}
		hr = r
	}
	hr.Keys = append(hr.Keys, f.timedKeys...)
	return &keyring{hr: hr, untimed: f.untimedKeys}, nil
}

// keyring is a HashRatchet that also holds keys given without their
// timestamp: a sealed blob's header names its key by Keccak-256(community ||
// timestamp || key) and carries the timestamp's low 32 bits, so the rest is
// found by trying the high bits (millisecond timestamps up to year 2527).
type keyring struct {
	hr      *archive.HashRatchet
	untimed [][]byte
}

func (k *keyring) Decrypt(blob []byte) ([]byte, error) {
	if len(k.untimed) > 0 {
		k.resolve(blob)
	}
	return k.hr.Decrypt(blob)
}

func (k *keyring) resolve(blob []byte) {
	var pm pb.ProtocolMessage
	if proto.Unmarshal(blob, &pm) != nil {
		return
	}
	hdr := pm.GetEncryptedMessage()["none"].GetHRHeader()
	id := hdr.GetKeyId()
	if len(id) == 0 {
		return
	}
	low := uint64(hdr.GetDeprecatedKeyId())
	var tsb [8]byte
	for i, key := range k.untimed {
		for hi := uint64(0); hi < 1<<12; hi++ {
			ts := hi<<32 | low
			binary.LittleEndian.PutUint64(tsb[:], ts)
			h := sha3.NewLegacyKeccak256()
			h.Write(k.hr.Community[:])
			h.Write(tsb[:])
			h.Write(key)
			if bytes.Equal(h.Sum(nil), id) {
				k.hr.Keys = append(k.hr.Keys, archive.RatchetKey{Timestamp: ts, Key: key})
				k.untimed = slices.Delete(k.untimed, i, i+1)
				return
			}
		}
	}
}

// parseRatchetKeys reads -ratchet-key values: [TIMESTAMP_MS:]HEX of 32 bytes.
func parseRatchetKeys(vals []string) (timed []archive.RatchetKey, untimed [][]byte, err error) {
	for _, v := range vals {
		tsPart, keyPart, hasTS := strings.Cut(v, ":")
		if !hasTS {
			keyPart = tsPart
		}
		h := strings.TrimPrefix(strings.TrimPrefix(keyPart, "0x"), "0X")
		key, err := hex.DecodeString(h)
		if err != nil || len(key) != 32 {
			return nil, nil, fmt.Errorf("-ratchet-key %q: want [TIMESTAMP_MS:]HEX of a 32-byte key", truncateString(v, 40))
		}
		if !hasTS {
			untimed = append(untimed, key)
			continue
		}
		n, err := strconv.ParseUint(tsPart, 10, 64)
		if err != nil || n == 0 {
			return nil, nil, fmt.Errorf("-ratchet-key %q: bad timestamp %q: want milliseconds", truncateString(v, 40), tsPart)
		}
		timed = append(timed, archive.RatchetKey{Timestamp: n, Key: key})
	}
	return timed, untimed, nil
}

// loadRecord reads seen.json, and cuts messages.jsonl back to its length at
// the last recorded import (an interrupted run may have appended an
// archive's messages without recording it).
func (f *fetcher) loadRecord(folder string, c archive.CommunityID) (*memberRecord, error) {
	rec := &memberRecord{Community: c.String()}
	path := filepath.Join(folder, fetchSeenFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		if err := json.Unmarshal(b, rec); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if rec.Community != c.String() {
			return nil, fmt.Errorf("%s records community %s, not %s", path, rec.Community, c)
		}
	}
	mpath := filepath.Join(folder, fetchMessagesFile)
	st, err := os.Stat(mpath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		rec.MessagesBytes = 0
	case err != nil:
		return nil, err
	case st.Size() > rec.MessagesBytes:
		f.progress.clear()
		fmt.Fprintf(f.env.Stderr, "warning: %s holds %d bytes past the last recorded import (an interrupted run): cut off\n",
			mpath, st.Size()-rec.MessagesBytes)
		if err := os.Truncate(mpath, rec.MessagesBytes); err != nil {
			return nil, err
		}
	case st.Size() < rec.MessagesBytes:
		rec.MessagesBytes = st.Size() // consumed or rotated: append from here
	}
	return rec, nil
}

func saveRecord(folder string, rec *memberRecord) error {
	if err := os.MkdirAll(folder, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(folder, fetchSeenFile), append(b, '\n'), 0o644)
}

// appendMessages appends msgs as JSON lines, synced, and returns the file's
// new length.
func appendMessages(path string, msgs []archive.Message) (int64, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return 0, err
	}
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return 0, err
	}
	defer out.Close()
	if err := writeJSONLines(out, msgs); err != nil { // buffered, flushed
		return 0, err
	}
	if err := out.Sync(); err != nil {
		return 0, err
	}
	st, err := out.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), out.Close()
}

// readTorrentFile reads a downloaded torrent file through the client.
func readTorrentFile(ctx context.Context, tf *torrent.File) ([]byte, error) {
	r := tf.NewReader()
	defer r.Close()
	r.SetContext(ctx)
	r.SetReadahead(0)
	b := make([]byte, tf.Length())
	_, err := io.ReadFull(r, b)
	return b, err
}

// freshCompletion is piece completion for a download that starts from
// nothing: a piece not yet hash-checked here is known to be missing.
// anacrolix (v1.61) never requests a piece whose completion is unknown, and
// learns it by hashing every piece when the metadata arrives; fetch skips
// that check (DisableInitialPieceCheck) and so must answer "missing".
type freshCompletion struct{ storage.PieceCompletion }

func (c freshCompletion) Get(k metainfo.PieceKey) (storage.Completion, error) {
	v, err := c.PieceCompletion.Get(k)
	if err == nil && !v.Ok {
		v = storage.Completion{Ok: true}
	}
	return v, err
}

// Persistent tells anacrolix not to flush files each time a piece completes.
func (freshCompletion) Persistent() bool { return false }

// parseListen reads a -listen host:port (port 0: any).
func parseListen(s string) (string, int, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("-listen %q: %v", s, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("-listen %q: bad port", s)
	}
	return host, port, nil
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	if host == "" {
		return errors.New("no host")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("bad port %q", port)
	}
	return nil
}

func shortArchiveID(id string) string { return truncateString(id, 12) }

func truncateString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func byteSize(n int64) string {
	switch {
	case n >= 10<<20:
		return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// isTerminal tells whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progressLine shows progress on one line rewritten in place on a terminal;
// elsewhere (-progress) only the lines that end a step are written.
type progressLine struct {
	w        io.Writer
	on, live bool
	shown    bool // a line not ended by a newline is on screen
	last     time.Time
}

func newProgressLine(w io.Writer, on bool) *progressLine {
	return &progressLine{w: w, on: on, live: on && isTerminal(w)}
}

// update rewrites the line, at most five times a second unless now.
func (p *progressLine) update(now bool, s string) {
	if !p.live || (!now && time.Since(p.last) < 200*time.Millisecond) {
		return
	}
	p.last = time.Now()
	fmt.Fprintf(p.w, "\r%s\x1b[K", s)
	p.shown = true
}

// done writes a step's final line.
func (p *progressLine) done(s string) {
	if !p.on {
		return
	}
	if p.live {
		fmt.Fprintf(p.w, "\r%s\x1b[K\n", s)
	} else {
		fmt.Fprintln(p.w, s)
	}
	p.shown, p.last = false, time.Time{}
}

// clear removes a pending progress line before other output.
func (p *progressLine) clear() {
	if p.shown {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.shown = false
	}
}
