package archive

import (
	"bytes"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"runtime"
	"slices"
	"sync"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
)

// File names inside a community's archive folder. Members find the index by
// DisplayPath()=="index"; "data" sorts first, so data offsets are torrent offsets.
const (
	DataFile  = "data"
	IndexFile = "index"
)

// DefaultAnnounceList is status-go's defaultAnnounceList.
var DefaultAnnounceList = [][]string{
	{"udp://tracker.opentrackr.org:1337/announce"},
	{"udp://tracker.openbittorrent.com:6969/announce"},
}

// TorrentOptions shape the metainfo and magnet link. None of them changes the
// infohash: they live outside the info dictionary.
type TorrentOptions struct {
	// AnnounceList is the tracker tiers; nil means DefaultAnnounceList, an empty
	// non-nil slice means no trackers.
	AnnounceList [][]string
	// CreatedBy is the "created by" field; status-go puts the owner's public key there.
	CreatedBy string
	// Peers are "host:port" addresses added to the magnet as x.pe (BEP 9),
	// which status-go's anacrolix client dials directly.
	Peers []string
	// WebSeeds are BEP 19 base URLs, written as url-list and ws=.
	WebSeeds []string
}

func (o TorrentOptions) announceList() [][]string {
	if o.AnnounceList == nil {
		return DefaultAnnounceList
	}
	return o.AnnounceList
}

// metaInfo assembles the torrent for a community folder whose data file has
// dataLen bytes and whose index is index, given every piece hash.
func metaInfo(c CommunityID, dataLen int64, indexLen int64, pieces []byte, o TorrentOptions) (*metainfo.MetaInfo, metainfo.Info, error) {
	info := metainfo.Info{
		PieceLength: PieceLength,
		Pieces:      pieces,
		Name:        c.String(),
		Files: []metainfo.FileInfo{
			{Length: dataLen, Path: []string{DataFile}},
			{Length: indexLen, Path: []string{IndexFile}},
		},
	}
	infoBytes, err := bencode.Marshal(info)
	if err != nil {
		return nil, info, fmt.Errorf("encode info: %w", err)
	}
	mi := &metainfo.MetaInfo{
		InfoBytes:    infoBytes,
		AnnounceList: o.announceList(),
		CreatedBy:    o.CreatedBy,
		UrlList:      o.WebSeeds,
	}
	return mi, info, nil
}

// Magnet forms the link status-go's metaInfo.Magnet(nil, &info).String() gives
// (xt first, then dn and tr, url-encoded, keys sorted), with trackers in
// announce-list order rather than map order, plus x.pe peers and ws web seeds.
func Magnet(mi *metainfo.MetaInfo, name string, peers []string) string {
	m := metainfo.Magnet{
		InfoHash:    mi.HashInfoBytes(),
		DisplayName: name,
		Params:      url.Values{},
	}
	for _, tier := range mi.UpvertedAnnounceList() {
		for _, tr := range tier {
			if !slices.Contains(m.Trackers, tr) {
				m.Trackers = append(m.Trackers, tr)
			}
		}
	}
	if len(mi.UrlList) > 0 {
		m.Params["ws"] = slices.Clone(mi.UrlList)
	}
	if len(peers) > 0 {
		m.Params["x.pe"] = slices.Clone(peers)
	}
	return m.String()
}

// hashFilePrefix hashes the first n bytes (a multiple of PieceLength) of a
// file, reading it in order and hashing the buffers on every core.
func hashFilePrefix(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sums := make([]byte, n/PieceLength*sha1.Size)
	free := make(chan []byte, runtime.GOMAXPROCS(0)+1)
	for range cap(free) {
		free <- make([]byte, bufferBytes)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for off := int64(0); off < n; off += bufferBytes {
		buf := (<-free)[:min(bufferBytes, n-off)]
		if _, err := io.ReadFull(f, buf); err != nil {
			return nil, fmt.Errorf("hash %s: %w", path, err)
		}
		out := sums[off/PieceLength*sha1.Size:]
		wg.Go(func() {
			appendPieceSums(out[:0], buf) // fills out in place: it has the room
			free <- buf[:cap(buf)]
		})
	}
	wg.Wait()
	return sums, nil
}

// appendPieceSums appends the SHA-1 of each piece of data, data starting on
// a piece boundary, a shorter last piece included.
func appendPieceSums(dst, data []byte) []byte {
	h := sha1.New()
	for len(data) > 0 {
		k := min(len(data), PieceLength)
		h.Reset()
		h.Write(data[:k])
		dst = h.Sum(dst)
		data = data[k:]
	}
	return dst
}

// VerifyPieces hashes r piece by piece and compares each with pieces[first:]:
// r must hold exactly the bytes of pieces first to the end of the torrent.
// Data regions start on piece boundaries, so any suffix of a community
// torrent from an archive boundary on can be checked on its own.
func VerifyPieces(pieces []byte, first int, r io.Reader) error {
	buf := make([]byte, PieceLength)
	i := first
	for ; ; i++ {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if (i+1)*sha1.Size > len(pieces) {
				return fmt.Errorf("%w: more bytes than pieces (piece %d)", ErrMalformed, i)
			}
			sum := sha1.Sum(buf[:n])
			if !bytes.Equal(sum[:], pieces[i*sha1.Size:(i+1)*sha1.Size]) {
				return fmt.Errorf("%w: piece %d does not match its hash", ErrMalformed, i)
			}
			if n < PieceLength {
				i++
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	if i*sha1.Size != len(pieces) {
		return fmt.Errorf("%w: %d pieces of bytes for %d piece hashes", ErrMalformed, i, len(pieces)/sha1.Size)
	}
	return nil
}
