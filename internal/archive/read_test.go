package archive

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/archivefleet/archivefleet/internal/pb"
)

func entryAt(t *testing.T, from, offset, size, padding uint64) Entry {
	t.Helper()
	e, err := newEntry(&pb.WakuMessageArchiveMetadata{From: from, To: from + week}, offset, size, padding)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestDecodeIndexRejectsHostileInput(t *testing.T) {
	ok := entryAt(t, 0, 0, PieceLength, 10)
	second := entryAt(t, week, PieceLength, 2*PieceLength, 10)
	idx := func(es ...Entry) []byte { return encodeIndex(es) }
	huge := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.BytesType), 1<<62)
	tests := []struct {
		name     string
		raw      []byte
		dataSize int64
		lim      Limits
		want     error
	}{
		{"garbage", []byte{0xff, 0xff, 0xff, 0xff}, -1, Limits{}, ErrMalformed},
		{"length past end", huge, -1, Limits{}, ErrMalformed},
		{"overlap", idx(entryAt(t, 0, 0, 2*PieceLength, 1), entryAt(t, week, PieceLength, PieceLength, 1)), -1, Limits{}, ErrMalformed},
		{"offset past data", idx(ok, second), 2 * PieceLength, Limits{}, ErrMalformed},
		{"size over cap", idx(entryAt(t, 0, 0, 4*PieceLength, 1)), -1, Limits{MaxArchiveBytes: 2 * PieceLength}, ErrMalformed},
		{"unaligned offset", idx(entryAt(t, 0, 100, PieceLength, 1)), -1, Limits{}, ErrMalformed},
		{"unaligned size", idx(entryAt(t, 0, 0, PieceLength+1, 1)), -1, Limits{}, ErrMalformed},
		{"all padding", idx(entryAt(t, 0, 0, PieceLength, PieceLength)), -1, Limits{}, ErrMalformed},
		{"overflow", idx(entryAt(t, 0, ^uint64(0)/PieceLength*PieceLength, PieceLength, 1)), -1, Limits{}, ErrMalformed},
		{"duplicate id", idx(ok, ok), -1, Limits{}, ErrMalformed},
		{"too many", idx(ok, second), -1, Limits{MaxEntries: 1}, ErrMalformed},
		{"too big", idx(ok, second), -1, Limits{MaxIndexBytes: 10}, ErrMalformed},
		{"encrypted without key", mustMarshal(t, &pb.ProtocolMessage{InstallationId: "x"}), -1, Limits{}, ErrEncryptedNoKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeIndex(tt.raw, nil, tt.dataSize, tt.lim)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	if ix, err := DecodeIndex(idx(second, ok), nil, 3*PieceLength, Limits{}); err != nil || ix.Entries[0].ID != ok.ID {
		t.Fatalf("valid index: %v (entries must come back in offset order)", err)
	}
}

func TestReadArchiveErrors(t *testing.T) {
	c := testCommunity(t, 21)
	l := testLayout(t)
	msgs := genMessages(1, 20, 1_700_000_000, week, 100)
	mustBuild(t, l, BuildOptions{Community: c, From: 1_700_000_000, To: 1_700_000_000 + week, Source: NewSliceSource(msgs)})
	dir := l.ArchiveDir(c)
	f, err := OpenFolder(dir, nil, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	e := f.Index.Entries[0]
	f.Close()

	// A data file cut short: OpenFolder refuses it before any read.
	os.Truncate(filepath.Join(dir, DataFile), 1000)
	if _, err := OpenFolder(dir, nil, Limits{}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short data: %v", err)
	}
	// ReadArchive on its own reports the short read too.
	if _, err := ReadArchive(bytes.NewReader(make([]byte, 1000)), e, nil); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short reader: %v", err)
	}
	// Garbage in place of the archive, no decrypter.
	garbage := bytes.Repeat([]byte{0xff}, int(e.Size))
	if _, err := ReadArchive(bytes.NewReader(garbage), e, nil); !errors.Is(err, ErrMalformed) {
		t.Fatalf("garbage archive: %v", err)
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
