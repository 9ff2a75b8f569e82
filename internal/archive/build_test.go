package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
)

func TestParseCommunityID(t *testing.T) {
	good := testCommunity(t, 1)
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"lower", good.String(), true},
		{"upper hex", "0x" + string(bytes.ToUpper([]byte(good.String()[2:]))), true},
		{"no prefix", good.String()[2:], false},
		{"short", good.String()[:20], false},
		{"path traversal", "0x../../etc/passwd", false},
		{"uncompressed prefix", "0x04" + good.String()[4:], false},
		{"not on curve", "0x02" + "ff" + good.String()[6:], false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := ParseCommunityID(tt.in)
			if tt.ok != (err == nil) {
				t.Fatalf("ParseCommunityID(%q) err = %v, want ok=%v", tt.in, err, tt.ok)
			}
			if tt.ok && id != good {
				t.Fatalf("parsed %s, want %s", id, good)
			}
			if !tt.ok && !errors.Is(err, ErrInvalidCommunityID) {
				t.Fatalf("error %v is not ErrInvalidCommunityID", err)
			}
		})
	}
}

func TestPaddedSize(t *testing.T) {
	tests := []struct{ raw, size, padding uint64 }{
		{1, PieceLength, PieceLength - 1},
		{PieceLength - 1, PieceLength, 1},
		{PieceLength, PieceLength, 0},
		{PieceLength + 1, 2 * PieceLength, PieceLength - 1},
		// status-go's quirk: an exact multiple above one piece gets a whole zero piece more.
		{2 * PieceLength, 3 * PieceLength, PieceLength},
	}
	for _, tt := range tests {
		size, padding := paddedSize(int(tt.raw))
		if size != tt.size || padding != tt.padding {
			t.Errorf("paddedSize(%d) = %d, %d; want %d, %d", tt.raw, size, padding, tt.size, tt.padding)
		}
	}
}

// TestRoundTrip builds archives and reads every message back, plain and
// encrypted, over many windows, with chunking, and extended by a second run.
func TestRoundTrip(t *testing.T) {
	const start = uint64(1_700_000_000)
	tests := []struct {
		name      string
		encrypted bool
		chunk     int
		payload   int
		extend    bool
	}{
		{"plain many windows", false, 0, 300, false},
		{"plain chunked", false, 20_000, 1500, false},
		{"plain extended", false, 20_000, 700, true},
		{"encrypted many windows", true, 0, 300, false},
		{"encrypted chunked extended", true, 20_000, 1500, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testCommunity(t, 7)
			l := testLayout(t)
			first := genMessages(1, 200, start, 5*week, tt.payload)
			var enc Encrypter
			var dec Decrypter
			if tt.encrypted {
				r := newTestRatchet(t, c)
				enc, dec = r, r
			}
			o := BuildOptions{Community: c, Topics: testTopics, From: start, To: start + 5*week,
				Source: NewSliceSource(first), Encrypter: enc, Decrypter: dec, ChunkBytes: tt.chunk}
			res := mustBuild(t, l, o)
			if res.Messages != len(first) {
				t.Fatalf("archived %d messages, want %d", res.Messages, len(first))
			}
			if tt.chunk == 0 && len(res.Archives) != 5 {
				t.Fatalf("got %d archives for 5 weekly windows, want 5", len(res.Archives))
			}
			if tt.chunk > 0 && len(res.Archives) <= 5 {
				t.Fatalf("got %d archives, want chunking to split windows", len(res.Archives))
			}
			want := first
			if tt.extend {
				oldIndex := res.Archives
				oldData := readFile(t, filepath.Join(l.ArchiveDir(c), DataFile))
				second := genMessages(2, 150, start+5*week, 3*week, tt.payload)
				all := append(append([]Message{}, first...), second...)
				o.From, o.To, o.Source = start+5*week, start+8*week, NewSliceSource(all)
				res2 := mustBuild(t, l, o)
				if res2.Messages != len(second) {
					t.Fatalf("extension archived %d messages, want %d", res2.Messages, len(second))
				}
				if res2.PiecesReused != len(oldData)/PieceLength {
					t.Fatalf("extension reused %d pieces, want %d", res2.PiecesReused, len(oldData)/PieceLength)
				}
				newData := readFile(t, filepath.Join(l.ArchiveDir(c), DataFile))
				if !bytes.Equal(newData[:len(oldData)], oldData) {
					t.Fatal("extension changed earlier data bytes")
				}
				_, ix := extractAll(t, l.ArchiveDir(c), dec)
				for _, old := range oldIndex {
					got, ok := ix.Lookup(old.ID)
					if !ok || !bytes.Equal(got.record, old.record) {
						t.Fatalf("earlier index entry %s changed or vanished", old.ID)
					}
				}
				if res2.InfoHash == res.InfoHash {
					t.Fatal("extension kept the infohash")
				}
				want = all
			}
			got, ix := extractAll(t, l.ArchiveDir(c), dec)
			if ix.Encrypted != tt.encrypted {
				t.Fatalf("index encrypted = %v, want %v", ix.Encrypted, tt.encrypted)
			}
			if !reflect.DeepEqual(normalize(got), normalize(sortedMessages(want))) {
				t.Fatalf("extracted %d messages differ from the %d built", len(got), len(want))
			}
			checkAgainstBuildFromFilePath(t, l, c)
		})
	}
}

// normalize maps empty byte slices to nil so DeepEqual compares content.
func normalize(ms []Message) []Message {
	out := make([]Message, len(ms))
	for i, m := range ms {
		for _, p := range []*HexBytes{&m.Sig, &m.Payload, &m.Padding, &m.Hash} {
			if len(*p) == 0 {
				*p = nil
			}
		}
		out[i] = m
	}
	return out
}

// checkAgainstBuildFromFilePath compares our incrementally hashed info
// dictionary with the one status-go makes: info.BuildFromFilePath over the folder.
func checkAgainstBuildFromFilePath(t *testing.T, l Layout, c CommunityID) {
	t.Helper()
	mi, err := metainfo.LoadFromFile(l.TorrentPath(c))
	if err != nil {
		t.Fatal(err)
	}
	ref := metainfo.Info{PieceLength: PieceLength}
	if err := ref.BuildFromFilePath(l.ArchiveDir(c)); err != nil {
		t.Fatal(err)
	}
	refBytes, err := bencode.Marshal(ref)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mi.InfoBytes, refBytes) {
		t.Fatalf("info dictionary differs from BuildFromFilePath's (%d vs %d bytes)", len(mi.InfoBytes), len(refBytes))
	}
}

func TestDeterministicPlainBuild(t *testing.T) {
	c := testCommunity(t, 3)
	msgs := genMessages(5, 300, 1_700_000_000, 3*week, 500)
	var outs [2][3][]byte
	var magnets [2]string
	for i := range outs {
		l := testLayout(t)
		// Shuffle the input order: the source must make the output independent of it.
		in := append([]Message{}, msgs...)
		if i == 1 {
			for a, b := 0, len(in)-1; a < b; a, b = a+1, b-1 {
				in[a], in[b] = in[b], in[a]
			}
		}
		res := mustBuild(t, l, BuildOptions{Community: c, Topics: testTopics, From: 1_700_000_000,
			To: 1_700_000_000 + 3*week, Source: NewSliceSource(in)})
		dir := l.ArchiveDir(c)
		outs[i] = [3][]byte{readFile(t, filepath.Join(dir, DataFile)), readFile(t, filepath.Join(dir, IndexFile)), readFile(t, l.TorrentPath(c))}
		magnets[i] = res.Magnet
	}
	for k, name := range []string{"data", "index", "torrent"} {
		if !bytes.Equal(outs[0][k], outs[1][k]) {
			t.Errorf("%s differs between identical builds", name)
		}
	}
	if magnets[0] != magnets[1] {
		t.Errorf("magnets differ: %s vs %s", magnets[0], magnets[1])
	}
}

func TestUnarchivableMessagesAreReported(t *testing.T) {
	for _, tc := range []struct {
		name   string
		spoil  func(*Message)
		reason string
	}{
		{"over the chunk cap", func(m *Message) { m.Payload = make([]byte, 5000) }, "exceeds"},
		{"thirdPartyId not UTF-8", func(m *Message) { m.ThirdPartyID = "\xff\xfe" }, "UTF-8"},
	} {
		for _, enc := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/encrypted=%v", tc.name, enc), func(t *testing.T) {
				c := testCommunity(t, 4)
				l := testLayout(t)
				msgs := genMessages(9, 10, 1_700_000_000, week, 100)
				tc.spoil(&msgs[3])
				o := BuildOptions{Community: c, Topics: testTopics, From: 1_700_000_000,
					To: 1_700_000_000 + week, Source: NewSliceSource(msgs), ChunkBytes: 4000}
				var dec Decrypter
				if enc {
					r := newTestRatchet(t, c)
					o.Encrypter, dec = r, r
				}
				res := mustBuild(t, l, o)
				if len(res.Skipped) != 1 || !bytes.Equal(res.Skipped[0].Hash, msgs[3].Hash) ||
					!strings.Contains(res.Skipped[0].Reason, tc.reason) {
					t.Fatalf("skipped = %+v, want message 3 reported (%s)", res.Skipped, tc.reason)
				}
				got, _ := extractAll(t, l.ArchiveDir(c), dec)
				if res.Messages != 9 || len(got) != 9 {
					t.Fatalf("archived %d, extracted %d messages, want 9", res.Messages, len(got))
				}
			})
		}
	}
}

func TestForeignTopicsAreCounted(t *testing.T) {
	c := testCommunity(t, 4)
	l := testLayout(t)
	msgs := genMessages(9, 30, 1_700_000_000, week, 100)
	res := mustBuild(t, l, BuildOptions{Community: c, Topics: testTopics[:1], From: 1_700_000_000,
		To: 1_700_000_000 + week, Source: NewSliceSource(msgs)})
	if res.ForeignTopic != 20 || res.Messages != 10 {
		t.Fatalf("foreign=%d archived=%d, want 20 and 10", res.ForeignTopic, res.Messages)
	}
}

func TestRangeRules(t *testing.T) {
	c := testCommunity(t, 5)
	l := testLayout(t)
	msgs := genMessages(1, 50, 1_700_000_000, 2*week, 100)
	o := BuildOptions{Community: c, From: 1_700_000_000, To: 1_700_000_000 + 2*week, Source: NewSliceSource(msgs)}
	mustBuild(t, l, o)
	o.From = 1_700_000_000 + week
	if _, err := Build(context.Background(), l, o); !errors.Is(err, ErrOverlap) {
		t.Fatalf("overlapping build: err = %v, want ErrOverlap", err)
	}
	o.From, o.To = 1_700_000_000+3*week, 1_700_000_000+3*week
	if _, err := Build(context.Background(), l, o); err == nil {
		t.Fatal("empty range accepted")
	}
	o.To = o.From + week
	o.Interval = 1500e6 // 1.5 s
	if _, err := Build(context.Background(), l, o); err == nil {
		t.Fatal("fractional interval accepted")
	}
}

// TestNoNewArchives checks a run over an empty range keeps files and torrent.
func TestNoNewArchives(t *testing.T) {
	c := testCommunity(t, 6)
	l := testLayout(t)
	msgs := genMessages(1, 50, 1_700_000_000, week, 100)
	res := mustBuild(t, l, BuildOptions{Community: c, From: 1_700_000_000, To: 1_700_000_000 + week, Source: NewSliceSource(msgs)})
	before := readFile(t, l.TorrentPath(c))
	res2 := mustBuild(t, l, BuildOptions{Community: c, From: 1_700_000_000 + week, To: 1_700_000_000 + 2*week, Source: NewSliceSource(msgs)})
	if len(res2.Archives) != 0 || res2.InfoHash != res.InfoHash || res2.To != 1_700_000_000+2*week {
		t.Fatalf("empty run: archives=%d infohash %s vs %s", len(res2.Archives), res2.InfoHash, res.InfoHash)
	}
	if !bytes.Equal(before, readFile(t, l.TorrentPath(c))) {
		t.Fatal("empty run changed the torrent")
	}
	// A community with no messages at all gets no files.
	c2 := testCommunity(t, 8)
	res3 := mustBuild(t, l, BuildOptions{Community: c2, From: 1, To: 1 + week, Source: NewSliceSource(nil)})
	if res3.InfoHash != "" {
		t.Fatal("torrent made for a community with no messages")
	}
	if _, err := os.Stat(filepath.Join(l.ArchiveDir(c2), DataFile)); !os.IsNotExist(err) {
		t.Fatalf("empty data file left behind: %v", err)
	}
}

// TestRecoversFromInterruptedRun simulates the two crash windows: data
// appended but no index written, and index written but the torrent not.
func TestRecoversFromInterruptedRun(t *testing.T) {
	c := testCommunity(t, 9)
	msgs := genMessages(3, 400, 1_700_000_000, 4*week, 400)
	ref := testLayout(t)
	o := BuildOptions{Community: c, Topics: testTopics, From: 1_700_000_000, To: 1_700_000_000 + 2*week, Source: NewSliceSource(msgs)}
	mustBuild(t, ref, o)
	o2 := o
	o2.From, o2.To = o.To, o.To+2*week
	want := mustBuild(t, ref, o2)

	t.Run("unindexed data tail", func(t *testing.T) {
		l := testLayout(t)
		mustBuild(t, l, o)
		f, err := os.OpenFile(filepath.Join(l.ArchiveDir(c), DataFile), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Write(bytes.Repeat([]byte{0xee}, 150_000))
		f.Close()
		got := mustBuild(t, l, o2)
		if got.DiscardedTail != 150_000 || got.InfoHash != want.InfoHash {
			t.Fatalf("discarded %d, infohash %s; want 150000, %s", got.DiscardedTail, got.InfoHash, want.InfoHash)
		}
	})
	t.Run("stale torrent", func(t *testing.T) {
		l := testLayout(t)
		mustBuild(t, l, o)
		os.WriteFile(l.TorrentPath(c), []byte("garbage"), 0o644)
		os.WriteFile(filepath.Join(l.ArchiveDir(c), ".index.tmp-123"), []byte("x"), 0o644)
		got := mustBuild(t, l, o2)
		if got.PiecesReused != 0 || got.InfoHash != want.InfoHash {
			t.Fatalf("reused %d pieces, infohash %s; want 0 and %s", got.PiecesReused, got.InfoHash, want.InfoHash)
		}
		if _, err := os.Stat(filepath.Join(l.ArchiveDir(c), ".index.tmp-123")); !os.IsNotExist(err) {
			t.Fatal("stale temp file left in the community folder")
		}
	})
	t.Run("missing data", func(t *testing.T) {
		l := testLayout(t)
		mustBuild(t, l, o)
		os.Truncate(filepath.Join(l.ArchiveDir(c), DataFile), PieceLength)
		if _, err := Build(context.Background(), l, o2); err == nil {
			t.Fatal("build over truncated data succeeded")
		}
	})
}

func TestVerifyPieces(t *testing.T) {
	c := testCommunity(t, 14)
	l := testLayout(t)
	mustBuild(t, l, BuildOptions{Community: c, From: 1_700_000_000, To: 1_700_000_000 + 2*week,
		Source: NewSliceSource(genMessages(2, 300, 1_700_000_000, 2*week, 800))})
	mi, _ := metainfo.LoadFromFile(l.TorrentPath(c))
	info, _ := mi.UnmarshalInfo()
	data := readFile(t, filepath.Join(l.ArchiveDir(c), DataFile))
	index := readFile(t, filepath.Join(l.ArchiveDir(c), IndexFile))
	all := append(append([]byte{}, data...), index...)
	corrupt := bytes.Clone(all)
	corrupt[PieceLength+7] ^= 1
	tests := []struct {
		name  string
		first int
		b     []byte
		ok    bool
	}{
		{"whole", 0, all, true},
		{"suffix from an archive boundary", 1, all[PieceLength:], true},
		{"corrupted byte", 0, corrupt, false},
		{"truncated", 0, all[:len(all)-1], false},
		{"extra byte", 0, append(bytes.Clone(all), 0), false},
		{"missing piece", 0, all[PieceLength:], false},
	}
	for _, tt := range tests {
		if err := VerifyPieces(info.Pieces, tt.first, bytes.NewReader(tt.b)); (err == nil) != tt.ok {
			t.Errorf("%s: err = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

// TestRehashMatchesReuse extends a community whose data spans several hashing
// buffers three ways: reusing the previous torrent's piece hashes, rehashing
// because the torrent is garbage, and rehashing because Verify asks for it.
// All three must give the same torrent.
func TestRehashMatchesReuse(t *testing.T) {
	c := testCommunity(t, 15)
	msgs := genMessages(6, 3000, 1_700_000_000, 3*week, 4000) // the first two weeks: ~8.4 MB, three hashing buffers
	o := BuildOptions{Community: c, Topics: testTopics, From: 1_700_000_000, To: 1_700_000_000 + 2*week, Source: NewSliceSource(msgs)}
	o2 := o
	o2.From, o2.To = o.To, o.To+week
	for _, tc := range []struct {
		name   string
		spoil  func(l Layout)
		verify bool
	}{
		{"garbage torrent", func(l Layout) { os.WriteFile(l.TorrentPath(c), []byte("garbage"), 0o644) }, false},
		{"verify", func(Layout) {}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := testLayout(t)
			first := mustBuild(t, ref, o)
			if first.DataBytes <= 2*bufferBytes {
				t.Fatalf("data is %d bytes, want more than two hashing buffers", first.DataBytes)
			}
			want := mustBuild(t, ref, o2)
			l := testLayout(t)
			mustBuild(t, l, o)
			tc.spoil(l)
			o3 := o2
			o3.Verify = tc.verify
			got := mustBuild(t, l, o3)
			if want.PiecesReused != int(first.DataBytes/PieceLength) || got.PiecesReused != 0 {
				t.Fatalf("reused %d and %d pieces, want %d and 0", want.PiecesReused, got.PiecesReused, first.DataBytes/PieceLength)
			}
			if got.InfoHash != want.InfoHash {
				t.Fatalf("rehashed infohash %s, reused %s", got.InfoHash, want.InfoHash)
			}
			checkAgainstBuildFromFilePath(t, l, c)
		})
	}
}
