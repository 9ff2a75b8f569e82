package archive

import (
	"path/filepath"
	"testing"
)

// fuzzSeeds builds a small plain and a small encrypted community and returns
// their index and first-archive bytes.
func fuzzSeeds(f *testing.F) (indexes, archives [][]byte, dec *HashRatchet) {
	c := testCommunity(f, 31)
	msgs := genMessages(1, 12, 1_700_000_000, 2*week, 60)
	r := newTestRatchet(f, c)
	for _, enc := range []Encrypter{nil, r} {
		l := testLayout(f)
		o := BuildOptions{Community: c, From: 1_700_000_000, To: 1_700_000_000 + 2*week, Source: NewSliceSource(msgs)}
		if enc != nil {
			o.Encrypter, o.Decrypter = enc, r
		}
		mustBuild(f, l, o)
		ix := readFile(f, filepath.Join(l.ArchiveDir(c), IndexFile))
		data := readFile(f, filepath.Join(l.ArchiveDir(c), DataFile))
		indexes = append(indexes, ix)
		dix, err := DecodeIndex(ix, r, int64(len(data)), Limits{})
		if err != nil {
			f.Fatal(err)
		}
		e := dix.Entries[0]
		archives = append(archives, data[e.Offset:e.Offset+e.Size-e.Padding])
	}
	// A short chain bound: coverage instrumentation makes Keccak slow, and
	// status-go's 100,000 steps per hostile seq_no would stall the fuzzer.
	return indexes, archives, &HashRatchet{Community: c, Keys: []RatchetKey{r.State.Key}, MaxSeqAhead: 64}
}

var fuzzLimits = Limits{MaxIndexBytes: 1 << 20, MaxArchiveBytes: 8 * PieceLength, MaxEntries: 1000}

func FuzzDecodeIndex(f *testing.F) {
	indexes, _, dec := fuzzSeeds(f)
	for _, ix := range indexes {
		f.Add(ix, int64(10*PieceLength))
	}
	f.Add([]byte{0x0a, 0x00}, int64(-1))
	f.Fuzz(func(t *testing.T, raw []byte, dataSize int64) {
		ix, err := DecodeIndex(raw, dec, dataSize, fuzzLimits)
		if err != nil {
			return
		}
		var end uint64
		for i, e := range ix.Entries {
			if e.Offset%PieceLength != 0 || e.Size%PieceLength != 0 || e.Size == 0 || e.Padding >= e.Size {
				t.Fatalf("accepted bad entry %+v", e)
			}
			if i > 0 && e.Offset < end {
				t.Fatalf("accepted overlapping entries")
			}
			end = e.Offset + e.Size
			if dataSize >= 0 && end > uint64(dataSize) {
				t.Fatalf("accepted entry past the data end")
			}
			if s, n := e.Pieces(); n-s != int(e.Size/PieceLength) {
				t.Fatalf("piece range %d..%d for size %d", s, n, e.Size)
			}
		}
		// Re-encoding what was accepted must decode to the same entries.
		if len(ix.Entries) > 0 {
			again, err := DecodeIndex(encodeIndex(ix.Entries), nil, dataSize, fuzzLimits)
			if err != nil || len(again.Entries) != len(ix.Entries) {
				t.Fatalf("re-encoded index does not decode: %v", err)
			}
		}
	})
}

func FuzzDecodeArchive(f *testing.F) {
	_, archives, dec := fuzzSeeds(f)
	for _, a := range archives {
		f.Add(a)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		a, err := DecodeArchive(raw, dec)
		if err != nil {
			return
		}
		for _, m := range a.Messages {
			if len(m.Topic) != 4 {
				t.Fatal("accepted a message without a 4-byte topic")
			}
		}
	})
}
