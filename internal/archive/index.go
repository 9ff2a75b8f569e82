package archive

import (
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/archivefleet/archivefleet/internal/pb"
)

// PieceLength is status-go's torrent piece length. Members hard-code it: they
// compute piece ranges as offset/102400 without reading the torrent's value.
const PieceLength = 100 * 1024

// Entry is one archive in an index: where it sits in the data file and the
// window it covers.
type Entry struct {
	ID      string   // "0x" + Keccak-256 of the marshalled index metadata
	From    uint64   // unix seconds, inclusive
	To      uint64   // unix seconds, exclusive
	Topics  [][]byte // the community's content topics when the archive was built
	Offset  uint64   // byte offset in the data file, piece-aligned
	Size    uint64   // bytes including padding, a multiple of PieceLength
	Padding uint64   // trailing zero bytes

	// record is the index map entry exactly as read or first written, so that
	// rewriting the index keeps every earlier entry byte-identical.
	record []byte
}

// Pieces returns the half-open range of torrent pieces holding the archive,
// computed as status-go members do.
func (e *Entry) Pieces() (start, end int) {
	start = int(e.Offset / PieceLength)
	return start, start + int(e.Size/PieceLength)
}

// Limits bounds what the decoders accept, so that hostile input fails with an
// error instead of exhausting memory.
type Limits struct {
	MaxIndexBytes   int // largest index file, encrypted or not
	MaxArchiveBytes int // largest single archive (Size)
	MaxEntries      int // most archives in one index
}

// DefaultLimits are generous for real communities: an archive holds at most
// 30,000,000 bytes of payload and sig, plus per-message framing, so even a
// chunk of tiny messages stays far below 256 MiB.
var DefaultLimits = Limits{
	MaxIndexBytes:   64 << 20,
	MaxArchiveBytes: 256 << 20,
	MaxEntries:      1 << 20,
}

func (l Limits) orDefault() Limits {
	if l.MaxIndexBytes <= 0 {
		l.MaxIndexBytes = DefaultLimits.MaxIndexBytes
	}
	if l.MaxArchiveBytes <= 0 {
		l.MaxArchiveBytes = DefaultLimits.MaxArchiveBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultLimits.MaxEntries
	}
	return l
}

// ErrMalformed marks input that is not a well-formed archive, index or envelope.
var ErrMalformed = errors.New("malformed")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// parseIndexEntries reads the map entries of a plain WakuMessageArchiveIndex at
// the wire level, keeping each entry's bytes. Unknown top-level fields are
// skipped, as proto.Unmarshal would.
func parseIndexEntries(b []byte, lim Limits) ([]Entry, error) {
	var entries []Entry
	seen := make(map[string]bool)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, malformed("index: %v", protowire.ParseError(n))
		}
		fieldLen := protowire.ConsumeFieldValue(num, typ, b[n:])
		if fieldLen < 0 {
			return nil, malformed("index: field %d: %v", num, protowire.ParseError(fieldLen))
		}
		field := b[:n+fieldLen]
		value := b[n : n+fieldLen]
		b = b[n+fieldLen:]
		if num != 1 {
			continue
		}
		if typ != protowire.BytesType {
			return nil, malformed("index: archives field has wire type %d", typ)
		}
		if len(entries) >= lim.MaxEntries {
			return nil, malformed("index: more than %d archives", lim.MaxEntries)
		}
		body, _ := protowire.ConsumeBytes(value)
		e, err := parseIndexRecord(body)
		if err != nil {
			return nil, err
		}
		if seen[e.ID] {
			return nil, malformed("index: archive %s listed twice", truncate(e.ID, 80))
		}
		seen[e.ID] = true
		e.record = field
		entries = append(entries, e)
	}
	return entries, nil
}

// parseIndexRecord parses one map entry: key (field 1, string) and value
// (field 2, WakuMessageArchiveIndexMetadata).
func parseIndexRecord(b []byte) (Entry, error) {
	var e Entry
	var meta pb.WakuMessageArchiveIndexMetadata
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return e, malformed("index entry: %v", protowire.ParseError(n))
		}
		b = b[n:]
		if (num == 1 || num == 2) && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return e, malformed("index entry: %v", protowire.ParseError(m))
			}
			b = b[m:]
			if num == 1 {
				if !utf8.Valid(v) || len(v) > 256 {
					return e, malformed("index entry: archive id is not a short UTF-8 string")
				}
				e.ID = string(v)
				continue
			}
			// Repeated value fields merge, as proto map decoding does.
			if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(v, &meta); err != nil {
				return e, malformed("index entry: %v", err)
			}
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return e, malformed("index entry: %v", protowire.ParseError(m))
		}
		b = b[m:]
	}
	md := meta.GetMetadata()
	e.From, e.To, e.Topics = md.GetFrom(), md.GetTo(), md.GetContentTopic()
	e.Offset, e.Size, e.Padding = meta.GetOffset(), meta.GetSize(), meta.GetPadding()
	return e, nil
}

// checkEntries verifies that archives are piece-aligned, padded within their
// size, under the size cap and non-overlapping, and (when dataSize >= 0) that
// they lie inside the data file. It returns the entries sorted by offset.
func checkEntries(entries []Entry, dataSize int64, lim Limits) ([]Entry, error) {
	sorted := slices.Clone(entries)
	slices.SortFunc(sorted, func(a, b Entry) int {
		if a.Offset != b.Offset {
			if a.Offset < b.Offset {
				return -1
			}
			return 1
		}
		return 0
	})
	var end uint64
	for i, e := range sorted {
		id := truncate(e.ID, 80)
		switch {
		case e.Size == 0 || e.Size%PieceLength != 0:
			return nil, malformed("archive %s: size %d is not a positive multiple of %d", id, e.Size, PieceLength)
		case e.Offset%PieceLength != 0:
			return nil, malformed("archive %s: offset %d is not piece-aligned", id, e.Offset)
		case e.Size > uint64(lim.MaxArchiveBytes):
			return nil, malformed("archive %s: size %d is over the %d-byte limit", id, e.Size, lim.MaxArchiveBytes)
		case e.Padding >= e.Size:
			return nil, malformed("archive %s: padding %d leaves no content in size %d", id, e.Padding, e.Size)
		case e.From > e.To:
			return nil, malformed("archive %s: window from %d is after to %d", id, e.From, e.To)
		case i > 0 && e.Offset < end:
			return nil, malformed("archive %s at offset %d overlaps the archive ending at %d", id, e.Offset, end)
		}
		if e.Offset > ^uint64(0)-e.Size {
			return nil, malformed("archive %s: offset+size overflows", id)
		}
		end = e.Offset + e.Size
		if dataSize >= 0 && end > uint64(dataSize) {
			return nil, malformed("archive %s: ends at %d, past the data file's %d bytes", id, end, dataSize)
		}
	}
	return sorted, nil
}

// encodeIndex writes the index map with the entries in offset order. Each
// entry's bytes are reused as read, so earlier entries never change.
func encodeIndex(entries []Entry) []byte {
	n := 0
	for _, e := range entries {
		n += len(e.record)
	}
	out := make([]byte, 0, n)
	for _, e := range entries {
		out = append(out, e.record...)
	}
	return out
}

// newEntry builds the index entry for a freshly written archive; its ID is
// Keccak-256 of the marshalled index metadata, as status-go derives it.
func newEntry(md *pb.WakuMessageArchiveMetadata, offset, size, padding uint64) (Entry, error) {
	meta := &pb.WakuMessageArchiveIndexMetadata{Metadata: md, Offset: offset, Size: size, Padding: padding}
	value, err := proto.MarshalOptions{Deterministic: true}.Marshal(meta)
	if err != nil {
		return Entry{}, fmt.Errorf("marshal index metadata: %w", err)
	}
	id := "0x" + fmt.Sprintf("%x", keccak256(value))
	var rec []byte
	rec = protowire.AppendString(protowire.AppendTag(rec, 1, protowire.BytesType), id)
	rec = protowire.AppendBytes(protowire.AppendTag(rec, 2, protowire.BytesType), value)
	field := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), rec)
	return Entry{
		ID: id, From: md.GetFrom(), To: md.GetTo(), Topics: md.GetContentTopic(),
		Offset: offset, Size: size, Padding: padding, record: field,
	}, nil
}

// paddedSize applies status-go's padding rule: at least one piece, and an
// archive that is an exact multiple of the piece length still gets one more
// whole piece of zeros (a member relies only on size and padding, so this
// quirk is kept to stay byte-identical).
func paddedSize(raw int) (size, padding uint64) {
	return PaddedSize(uint64(raw))
}

// PaddedSize is the size an archive of raw encoded bytes takes in the data
// file (a whole number of pieces, as Entry.Size) and its trailing zero
// padding (Entry.Padding), by status-go's rule. An archive's raw bytes are
// Size-Padding: a reader holding only those pads them back with zeros.
func PaddedSize(raw uint64) (size, padding uint64) {
	if raw > PieceLength {
		size = raw + PieceLength - raw%PieceLength
	} else {
		size = PieceLength
	}
	return size, size - raw
}
