package state_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// TestObjectPadding checks the rule readers apply to an archive object's
// size: the padded size (objects written before compact objects), the size
// without the padding the ref records, or, for a ref that records none, a
// length status-go's padding rule takes to the ref's size. Anything else is
// ErrCorruptObject naming the community, the archive and the sizes.
func TestObjectPadding(t *testing.T) {
	const pl = archive.PieceLength
	const c = "0x02cfca2ca218f099107c5d4b61cb17bd6566137dbecf7e4557984c882a16accd87"
	for _, tc := range []struct {
		name   string
		ref    state.ArchiveRef
		object uint64
		pad    uint64
		err    bool
	}{
		{"compact", state.ArchiveRef{Size: pl, Padding: pl - 700}, 700, pl - 700, false},
		{"padded, ref with padding", state.ArchiveRef{Size: pl, Padding: pl - 700}, pl, 0, false},
		{"padded, ref without padding", state.ArchiveRef{Size: 2 * pl}, 2 * pl, 0, false},
		{"compact, ref without padding", state.ArchiveRef{Size: 2 * pl}, pl + 1, pl - 1, false},
		{"compact, ref without padding, whole piece of padding", state.ArchiveRef{Size: 3 * pl}, 2 * pl, pl, false},
		{"no padding at all", state.ArchiveRef{Size: pl}, pl, 0, false},
		{"compact, one byte short", state.ArchiveRef{Size: pl, Padding: pl - 700}, 699, 0, true},
		{"compact, one byte over", state.ArchiveRef{Size: pl, Padding: pl - 700}, 701, 0, true},
		{"over the padded size", state.ArchiveRef{Size: pl, Padding: pl - 700}, pl + 1, 0, true},
		{"ref without padding, length of a one-piece archive", state.ArchiveRef{Size: 2 * pl}, pl, 0, true},
		{"ref without padding, length of a two-piece archive", state.ArchiveRef{Size: 3 * pl}, pl + 5, 0, true},
		{"ref without padding, empty object", state.ArchiveRef{Size: pl}, 0, 0, true},
		{"padding not below size", state.ArchiveRef{Size: pl, Padding: pl}, 0, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.ref.ID = "0xabcd"
			pad, err := tc.ref.ObjectPadding(c, tc.object)
			if tc.err {
				if !errors.Is(err, state.ErrCorruptObject) {
					t.Fatalf("err = %v, want ErrCorruptObject", err)
				}
				for _, want := range []string{c, "0xabcd", strconv.FormatUint(tc.object, 10), strconv.FormatUint(tc.ref.Size, 10)} {
					if !strings.Contains(err.Error(), want) {
						t.Fatalf("error %q does not name %s", err, want)
					}
				}
				return
			}
			if err != nil || pad != tc.pad {
				t.Fatalf("ObjectPadding = %d, %v; want %d", pad, err, tc.pad)
			}
			if tc.object+pad != tc.ref.Size {
				t.Fatalf("%d bytes + %d padding != size %d", tc.object, pad, tc.ref.Size)
			}
		})
	}
}

// TestFetchArchivesPads stores a real build's archives as compact objects
// (no trailing padding), as padded objects written before compact objects,
// and mixed, under refs with and without their padding, and checks that
// FetchArchives gives the data file byte for byte and that it verifies
// against the torrent; an object of the wrong size is ErrCorruptObject.
func TestFetchArchivesPads(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	ctx := context.Background()
	com := fixture.Community(time.Hour, 1_700_000_000, archive.Topic{1})
	id, c := com.ID, com.ID.String()
	l := archive.Layout{DataDir: filepath.Join(t.TempDir(), "d"), TorrentDir: filepath.Join(t.TempDir(), "t")}
	// Window 1: a handful of small messages (one piece); window 2: more
	// than a piece.
	msgs := append(fixture.Messages{N: 5, From: com.Since, To: com.Since + 60, Topics: com.Topics, Size: 420}.Make(),
		fixture.Messages{N: 40, From: com.Since + 3600, To: com.Since + 3660, Topics: com.Topics, Size: 3000}.Make()...)
	res, err := archive.Build(ctx, l, archive.BuildOptions{Community: id, Topics: com.Topics, From: com.Since, To: com.Since + 7200,
		Interval: time.Hour, Source: archive.NewSliceSource(msgs), Torrent: archive.TorrentOptions{AnnounceList: [][]string{}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Archives) != 2 || res.Archives[1].Size != 2*archive.PieceLength {
		t.Fatalf("built %d archives (%+v), want one of one piece and one of two", len(res.Archives), res.Archives)
	}
	data, _ := os.ReadFile(filepath.Join(l.ArchiveDir(id), archive.DataFile))
	index, _ := os.ReadFile(filepath.Join(l.ArchiveDir(id), archive.IndexFile))
	torrent, _ := os.ReadFile(l.TorrentPath(id))
	for name, v := range map[string][]byte{state.ObjectIndex(c, res.InfoHash): index, state.ObjectTorrent(c, res.InfoHash): torrent} {
		if _, err := b.Objects.PutBytes(ctx, name, v); err != nil {
			t.Fatal(err)
		}
	}
	st := &state.Build{InfoHash: res.InfoHash, DataBytes: res.DataBytes}
	cm, err := state.FetchCommitted(ctx, b, c, st)
	if err != nil {
		t.Fatal(err)
	}
	e := res.Archives
	padded := func(i int) []byte { return data[e[i].Offset : e[i].Offset+e[i].Size] }
	compact := func(i int) []byte { return data[e[i].Offset : e[i].Offset+e[i].Size-e[i].Padding] }
	ref := func(i int) state.ArchiveRef {
		return state.ArchiveRef{ID: e[i].ID, Offset: e[i].Offset, Size: e[i].Size, Padding: e[i].Padding}
	}
	oldRef := func(i int) state.ArchiveRef { r := ref(i); r.Padding = 0; return r }
	spoilt := func(p []byte) []byte { p = bytes.Clone(p); p[len(p)/2] ^= 1; return p }

	for _, tc := range []struct {
		name    string
		refs    []state.ArchiveRef
		objects [][]byte // per archive; nil: not stored
		from    int64
		err     string // "": fetches and verifies; "verify": fetches, fails verification; else in the fetch error
	}{
		{"compact", []state.ArchiveRef{ref(0), ref(1)}, [][]byte{compact(0), compact(1)}, 0, ""},
		{"padded, old refs", []state.ArchiveRef{oldRef(0), oldRef(1)}, [][]byte{padded(0), padded(1)}, 0, ""},
		{"padded, new refs", []state.ArchiveRef{ref(0), ref(1)}, [][]byte{padded(0), padded(1)}, 0, ""},
		{"compact, old refs", []state.ArchiveRef{oldRef(0), oldRef(1)}, [][]byte{compact(0), compact(1)}, 0, ""},
		{"old padded then new compact", []state.ArchiveRef{oldRef(0), ref(1)}, [][]byte{padded(0), compact(1)}, 0, ""},
		{"from the second archive", []state.ArchiveRef{ref(0), ref(1)}, [][]byte{nil, compact(1)}, int64(e[1].Offset), ""},
		{"compact cut one byte short", []state.ArchiveRef{ref(0), ref(1)}, [][]byte{compact(0), compact(1)[:len(compact(1))-1]}, 0,
			"has " + strconv.Itoa(len(compact(1))-1) + " bytes"},
		{"compact one byte too long", []state.ArchiveRef{ref(0), ref(1)}, [][]byte{append(bytes.Clone(compact(0)), 0), compact(1)}, 0,
			"want " + strconv.Itoa(len(compact(0))) + " (without its"},
		{"old ref, a piece short", []state.ArchiveRef{oldRef(0), oldRef(1)}, [][]byte{padded(0), padded(1)[:archive.PieceLength]}, 0,
			"has 102400 bytes: want 204800 (padded)"},
		{"compact, content changed", []state.ArchiveRef{ref(0), ref(1)}, [][]byte{compact(0), spoilt(compact(1))}, 0, "verify"},
		{"object missing", []state.ArchiveRef{ref(0), ref(1)}, [][]byte{compact(0), nil}, 0, "not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i, o := range tc.objects {
				name := state.ObjectArchive(c, e[i].ID)
				b.Objects.Delete(ctx, name)
				if o != nil {
					if _, err := b.Objects.PutBytes(ctx, name, o); err != nil {
						t.Fatal(err)
					}
				}
			}
			var got bytes.Buffer
			n, err := state.FetchArchives(ctx, b, c, tc.refs, tc.from, &got)
			switch {
			case tc.err == "" || tc.err == "verify":
				if err != nil {
					t.Fatalf("FetchArchives: %v", err)
				}
			case err == nil || !strings.Contains(err.Error(), tc.err):
				t.Fatalf("FetchArchives: %v, want an error with %q", err, tc.err)
			case tc.err != "not found" && (!errors.Is(err, state.ErrCorruptObject) || !strings.Contains(err.Error(), c)):
				t.Fatalf("FetchArchives: %v, want ErrCorruptObject naming the community", err)
			case tc.err == "not found" && !errors.Is(err, jetstream.ErrObjectNotFound):
				t.Fatalf("FetchArchives: %v, want ErrObjectNotFound", err)
			default:
				return
			}
			if n != int64(got.Len()) {
				t.Fatalf("returned %d, wrote %d", n, got.Len())
			}
			err = cm.Verify(tc.from, bytes.NewReader(got.Bytes()))
			if tc.err == "verify" {
				if !errors.Is(err, state.ErrCorruptObject) {
					t.Fatalf("Verify: %v, want ErrCorruptObject", err)
				}
				return
			}
			if !bytes.Equal(got.Bytes(), data[tc.from:]) {
				t.Fatalf("fetched %d bytes differ from the %d of the data file", got.Len(), len(data[tc.from:]))
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
		})
	}
}
