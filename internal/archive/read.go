package archive

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/archivefleet/archivefleet/internal/pb"
)

// Index is a decoded WakuMessageArchiveIndex.
type Index struct {
	// Entries are the archives in data-file order.
	Entries   []Entry
	Encrypted bool
}

// DecodeIndex decodes an index file as a status-go member does: a plain index,
// or, when that yields no archive from non-empty bytes, a ProtocolMessage
// opened with dec. dataSize, when not negative, is the data file's length,
// and every archive must lie within it.
func DecodeIndex(raw []byte, dec Decrypter, dataSize int64, lim Limits) (*Index, error) {
	lim = lim.orDefault()
	if len(raw) > lim.MaxIndexBytes {
		return nil, malformed("index of %d bytes is over the %d-byte limit", len(raw), lim.MaxIndexBytes)
	}
	entries, err := parseIndexEntries(raw, lim)
	if err != nil {
		return nil, err
	}
	ix := &Index{}
	if len(entries) == 0 && len(raw) > 0 {
		if dec == nil {
			return nil, ErrEncryptedNoKey
		}
		plain, err := dec.Decrypt(raw)
		if err != nil {
			return nil, fmt.Errorf("decrypt index: %w", err)
		}
		if len(plain) > lim.MaxIndexBytes {
			return nil, malformed("decrypted index is over the %d-byte limit", lim.MaxIndexBytes)
		}
		if entries, err = parseIndexEntries(plain, lim); err != nil {
			return nil, err
		}
		ix.Encrypted = true
	}
	if ix.Entries, err = checkEntries(entries, dataSize, lim); err != nil {
		return nil, err
	}
	return ix, nil
}

// ByFrom returns the archives oldest first (by window start, then offset):
// the order in which status-go members download and import them.
func (ix *Index) ByFrom() []Entry {
	s := slices.Clone(ix.Entries)
	slices.SortStableFunc(s, func(a, b Entry) int { return cmp.Compare(a.From, b.From) })
	return s
}

// Lookup returns the archive with the given id.
func (ix *Index) Lookup(id string) (Entry, bool) {
	for _, e := range ix.Entries {
		if e.ID == id {
			return e, true
		}
	}
	return Entry{}, false
}

// Archive is one decoded archive.
type Archive struct {
	From, To uint64
	Topics   [][]byte
	Messages []Message
}

// DecodeArchive decodes the content bytes of one archive (without padding) as
// a member does: a plain WakuMessageArchive, or if that fails to parse, a
// ProtocolMessage opened with dec.
func DecodeArchive(raw []byte, dec Decrypter) (*Archive, error) {
	var a pb.WakuMessageArchive
	if err := proto.Unmarshal(raw, &a); err != nil {
		if dec == nil {
			return nil, fmt.Errorf("%w: not a plain archive (%v) and no decrypter given", ErrMalformed, err)
		}
		plain, derr := dec.Decrypt(raw)
		if derr != nil {
			return nil, fmt.Errorf("decrypt archive: %w", derr)
		}
		a.Reset()
		if err := proto.Unmarshal(plain, &a); err != nil {
			return nil, malformed("decrypted archive: %v", err)
		}
	}
	md := a.GetMetadata()
	out := &Archive{From: md.GetFrom(), To: md.GetTo(), Topics: md.GetContentTopic(),
		Messages: make([]Message, 0, len(a.GetMessages()))}
	for _, w := range a.GetMessages() {
		m, err := messageFromProto(w)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		out.Messages = append(out.Messages, m)
	}
	return out, nil
}

// ReadArchive reads and decodes archive e from a data file. It reads exactly
// size-padding bytes at offset; a short file is an error. Take e from
// DecodeIndex, which bounds its size.
func ReadArchive(data io.ReaderAt, e Entry, dec Decrypter) (*Archive, error) {
	if e.Padding >= e.Size {
		return nil, malformed("archive %s: padding %d leaves no content", e.ID, e.Padding)
	}
	n := e.Size - e.Padding
	buf := make([]byte, n)
	if _, err := data.ReadAt(buf, int64(e.Offset)); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, malformed("archive %s: data file ends before offset %d + %d", e.ID, e.Offset, n)
		}
		return nil, fmt.Errorf("archive %s: read: %w", e.ID, err)
	}
	a, err := DecodeArchive(buf, dec)
	if err != nil {
		return nil, fmt.Errorf("archive %s: %w", e.ID, err)
	}
	return a, nil
}

// Folder is a community's archive folder opened for reading: its decoded index
// and its data file.
type Folder struct {
	Index *Index
	Data  *os.File
}

// OpenFolder opens <dir>/index and <dir>/data, checking every index entry
// against the data file's size.
func OpenFolder(dir string, dec Decrypter, lim Limits) (*Folder, error) {
	lim = lim.orDefault()
	data, err := os.Open(filepath.Join(dir, DataFile))
	if err != nil {
		return nil, err
	}
	st, err := data.Stat()
	if err != nil {
		data.Close()
		return nil, err
	}
	raw, err := readFileLimited(filepath.Join(dir, IndexFile), lim.MaxIndexBytes)
	if err != nil {
		data.Close()
		return nil, err
	}
	ix, err := DecodeIndex(raw, dec, st.Size(), lim)
	if err != nil {
		data.Close()
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return &Folder{Index: ix, Data: data}, nil
}

// Close closes the data file.
func (f *Folder) Close() error { return f.Data.Close() }

func readFileLimited(path string, limit int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, malformed("%s is over the %d-byte limit", path, limit)
	}
	return b, nil
}
