package archiver

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
	"github.com/prometheus/client_golang/prometheus"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/state"
)

// TestCompactObjects builds, checks that every archive object holds the
// archive without its padding (object size = Size-Padding < Size), then
// has fresh archivers restore the folder from the object store and reads
// it the seeder's way (state.FetchArchives): the padded data, index and
// torrent come back byte for byte and verify. Objects stored padded by
// earlier versions under states that do not record the padding read the
// same; an object of any other size is a permanent failure naming the
// community, the archive and the sizes.
func TestCompactObjects(t *testing.T) {
	ctx := context.Background()
	com := fixture.Community(time.Hour, uint64(time.Now().Unix())-10*3600, archive.Topic{1})
	s, st := newBuildService(t, com)
	c := com.ID.String()
	// A handful of small messages in the first window, more than a piece
	// in the second.
	msgs := append(fixture.Messages{N: 5, From: com.Since, To: com.Since + 60, Topics: com.Topics, Size: 420}.Make(),
		fixture.Messages{N: 40, From: com.Since + 3600, To: com.Since + 3660, Topics: com.Topics, Size: 3000}.Make()...)
	if res, err := st.Ingest(ctx, com.ID, msgs); err != nil || res.Stored != len(msgs) {
		t.Fatalf("ingest: %+v %v", res, err)
	}
	if _, err := s.build(ctx, s.Logger, com, bus.DueEvent{Community: c, End: com.Since + 2*3600}, 1); err != nil {
		t.Fatal(err)
	}
	built, _, err := s.State.GetBuild(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(built.Archives) != 2 {
		t.Fatalf("%d archives committed, want 2", len(built.Archives))
	}
	want := readFolder(t, s, com.ID)
	for _, a := range built.Archives {
		info, err := s.Bus.Objects.GetInfo(ctx, state.ObjectArchive(c, a.ID))
		if err != nil {
			t.Fatal(err)
		}
		if a.Padding == 0 || info.Size != a.Size-a.Padding || info.Size >= a.Size {
			t.Fatalf("archive %s: object of %d bytes, ref %+v: want its %d bytes without padding", a.ID, info.Size, a, a.Size-a.Padding)
		}
		t.Logf("archive %s: %d bytes stored for %d in the data file", a.ID, info.Size, a.Size)
	}

	padded := func(a state.ArchiveRef) []byte { return want.data[a.Offset : a.Offset+a.Size] }
	compact := func(a state.ArchiveRef) []byte { return want.data[a.Offset : a.Offset+a.Size-a.Padding] }
	for _, tc := range []struct {
		name     string
		object   func(i int, a state.ArchiveRef) []byte
		oldState bool   // refs without their padding, as states written before compact objects
		err      string // in restore's (permanent) error; "": restores
	}{
		{"compact, as built", func(_ int, a state.ArchiveRef) []byte { return compact(a) }, false, ""},
		{"padded objects, old state", func(_ int, a state.ArchiveRef) []byte { return padded(a) }, true, ""},
		{"compact objects, old state", func(_ int, a state.ArchiveRef) []byte { return compact(a) }, true, ""},
		{"old padded then compact", func(i int, a state.ArchiveRef) []byte {
			if i == 0 {
				return padded(a)
			}
			return compact(a)
		}, false, ""},
		{"compact one byte short", func(i int, a state.ArchiveRef) []byte {
			if i == 1 {
				return compact(a)[:len(compact(a))-1]
			}
			return compact(a)
		}, false, "archive object " + built.Archives[1].ID + " of community " + c + " has " +
			strconv.FormatUint(built.Archives[1].Size-built.Archives[1].Padding-1, 10) + " bytes: want " +
			strconv.FormatUint(built.Archives[1].Size-built.Archives[1].Padding, 10)},
		{"padded one byte long, old state", func(i int, a state.ArchiveRef) []byte {
			if i == 0 {
				return append(bytes.Clone(padded(a)), 0)
			}
			return padded(a)
		}, true, "archive object " + built.Archives[0].ID + " of community " + c + " has " +
			strconv.FormatUint(built.Archives[0].Size+1, 10) + " bytes: want " + strconv.FormatUint(built.Archives[0].Size, 10) + " (padded)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refs := make([]state.ArchiveRef, len(built.Archives))
			for i, a := range built.Archives {
				if _, err := s.Bus.Objects.PutBytes(ctx, state.ObjectArchive(c, a.ID), tc.object(i, a)); err != nil {
					t.Fatal(err)
				}
				refs[i] = a
				if tc.oldState {
					refs[i].Padding = 0
				}
			}
			cur := *built
			cur.Archives = refs
			putBuild(t, s.State, c, &cur)

			r := freshArchiver(t, s)
			err := r.restore(ctx, r.layout(), com.ID, &cur)
			if tc.err != "" {
				if !bus.IsPermanent(err) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("restore: %v; want a permanent failure with %q", err, tc.err)
				}
				var buf bytes.Buffer
				if _, err := state.FetchArchives(ctx, s.Bus, c, cur.Archives, 0, &buf); !errors.Is(err, state.ErrCorruptObject) {
					t.Fatalf("FetchArchives: %v, want ErrCorruptObject", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("restore: %v", err)
			}
			if got := readFolder(t, r, com.ID); !got.equal(want) {
				t.Fatal("restored folder differs from the one built")
			}
			// The seeder's way: fetch everything and verify it.
			cm, err := state.FetchCommitted(ctx, s.Bus, c, &cur)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			if _, err := state.FetchArchives(ctx, s.Bus, c, cur.Archives, 0, &buf); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf.Bytes(), want.data) {
				t.Fatal("fetched data differs from the data file built")
			}
			if err := cm.Verify(0, &buf); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestCompactObjectsMixedFleet: a community whose archives were stored
// padded by an earlier version (its state records no padding) is built on
// by an upgraded archiver with a fresh work dir: it restores from the
// padded objects, adds a compact one, and every reader gets the whole,
// verified data from the mix.
func TestCompactObjectsMixedFleet(t *testing.T) {
	ctx := context.Background()
	com := fixture.Community(time.Hour, uint64(time.Now().Unix())-10*3600, archive.Topic{1})
	s, st := newBuildService(t, com)
	c := com.ID.String()
	ingest := func(from uint64) {
		msgs := fixture.Messages{N: 5, From: from, To: from + 60, Topics: com.Topics, Size: 420}.Make()
		if res, err := st.Ingest(ctx, com.ID, msgs); err != nil || res.Stored != len(msgs) {
			t.Fatalf("ingest: %+v %v", res, err)
		}
	}
	ingest(com.Since)
	if _, err := s.build(ctx, s.Logger, com, bus.DueEvent{Community: c, End: com.Since + 3600}, 1); err != nil {
		t.Fatal(err)
	}
	// Make it what the earlier version left: padded objects, no padding in the state.
	old, _, _ := s.State.GetBuild(ctx, c)
	data := readFolder(t, s, com.ID).data
	for i, a := range old.Archives {
		if _, err := s.Bus.Objects.PutBytes(ctx, state.ObjectArchive(c, a.ID), data[a.Offset:a.Offset+a.Size]); err != nil {
			t.Fatal(err)
		}
		old.Archives[i].Padding = 0
	}
	putBuild(t, s.State, c, old)

	ingest(com.Since + 3600)
	u := freshArchiver(t, s)
	if _, err := u.build(ctx, u.Logger, com, bus.DueEvent{Community: c, End: com.Since + 2*3600}, 2); err != nil {
		t.Fatal(err)
	}
	next, _, _ := s.State.GetBuild(ctx, c)
	if len(next.Archives) != 2 || next.Archives[0] != old.Archives[0] || next.Archives[1].Padding == 0 {
		t.Fatalf("archives %+v: want the old ref unchanged and a new one with its padding", next.Archives)
	}
	for i, a := range next.Archives {
		info, err := s.Bus.Objects.GetInfo(ctx, state.ObjectArchive(c, a.ID))
		if err != nil {
			t.Fatal(err)
		}
		if wantSize := []uint64{a.Size, a.Size - a.Padding}[i]; info.Size != wantSize {
			t.Fatalf("archive %d: object of %d bytes, want %d", i, info.Size, wantSize)
		}
	}
	want := readFolder(t, u, com.ID)
	r := freshArchiver(t, s)
	if err := r.restore(ctx, r.layout(), com.ID, next); err != nil {
		t.Fatal(err)
	}
	if !readFolder(t, r, com.ID).equal(want) {
		t.Fatal("restored folder differs from the one built")
	}
	if got, _ := extract(t, r, com.ID); len(got) != 10 {
		t.Fatalf("%d messages in the restored folder, want 10", len(got))
	}
	cm, err := state.FetchCommitted(ctx, s.Bus, c, next)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := state.FetchArchives(ctx, s.Bus, c, next.Archives, 0, &buf); err != nil {
		t.Fatal(err)
	}
	if err := cm.Verify(0, &buf); err != nil {
		t.Fatal(err)
	}
}

// TestObjectBytesPerSmallArchive measures what one small archive costs in
// the object store: a community with a handful of ~540-byte Status
// messages in a week (status-go's interval), stored padded (as before
// compact objects) and compact. Both figures are measured: the object's
// size and what its put added to the bucket's stream.
func TestObjectBytesPerSmallArchive(t *testing.T) {
	ctx := context.Background()
	week := 7 * 24 * time.Hour
	com := fixture.Community(week, uint64(time.Now().Add(-8*24*time.Hour).Unix()), archive.Topic{1})
	s, st := newBuildService(t, com)
	c := com.ID.String()
	// A payload of 420 bytes with its 65-byte sig, topic, hash and
	// timestamp makes a WakuMessage of about 540 bytes.
	msgs := fixture.Messages{N: 6, From: com.Since, To: com.Since + uint64(week.Seconds()), Topics: com.Topics, Size: 420}.Make()
	if res, err := st.Ingest(ctx, com.ID, msgs); err != nil || res.Stored != len(msgs) {
		t.Fatalf("ingest: %+v %v", res, err)
	}
	if _, err := s.build(ctx, s.Logger, com, bus.DueEvent{Community: c, End: com.Since + uint64(week.Seconds())}, 1); err != nil {
		t.Fatal(err)
	}
	b, _, _ := s.State.GetBuild(ctx, c)
	if len(b.Archives) != 1 {
		t.Fatalf("%d archives, want 1", len(b.Archives))
	}
	a := b.Archives[0]
	data := readFolder(t, s, com.ID).data
	streamBytes := func() uint64 {
		t.Helper()
		st, err := s.Bus.Objects.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.Size()
	}
	// Put each form under a name of its own and measure what it adds.
	put := func(name string, v []byte) (object, stream uint64) {
		t.Helper()
		before := streamBytes()
		info, err := s.Bus.Objects.Put(ctx, jetstream.ObjectMeta{Name: name}, bytes.NewReader(v))
		if err != nil {
			t.Fatal(err)
		}
		return info.Size, streamBytes() - before
	}
	stored, err := s.Bus.Objects.GetInfo(ctx, state.ObjectArchive(c, a.ID))
	if err != nil {
		t.Fatal(err)
	}
	paddedObj, paddedStream := put("measure/padded", data[a.Offset:a.Offset+a.Size])
	compactObj, compactStream := put("measure/compact", data[a.Offset:a.Offset+a.Size-a.Padding])
	if stored.Size != compactObj || compactObj >= paddedObj {
		t.Fatalf("stored object %d bytes, compact %d, padded %d", stored.Size, compactObj, paddedObj)
	}
	t.Logf("FIGURES compact objects: %d messages of %d payload+sig bytes (%d archive bytes each) in one week: archive object %d bytes padded (stream +%d), %d compact (stream +%d): %.0fx smaller",
		len(msgs), msgs[0].Size(), compactObj/uint64(len(msgs)), paddedObj, paddedStream, compactObj, compactStream, float64(paddedStream)/float64(compactStream))
}

type folder struct{ data, index, torrent []byte }

func (f folder) equal(g folder) bool {
	return bytes.Equal(f.data, g.data) && bytes.Equal(f.index, g.index) && bytes.Equal(f.torrent, g.torrent)
}

func readFolder(t *testing.T, s *Service, id archive.CommunityID) folder {
	t.Helper()
	l := s.layout()
	var f folder
	for p, v := range map[string]*[]byte{
		filepath.Join(l.ArchiveDir(id), archive.DataFile):  &f.data,
		filepath.Join(l.ArchiveDir(id), archive.IndexFile): &f.index,
		l.TorrentPath(id): &f.torrent,
	} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		*v = b
	}
	return f
}

// freshArchiver is another archiver on s's bus with an empty work dir.
func freshArchiver(t *testing.T, s *Service) *Service {
	return New(Service{Bus: s.Bus, Registry: s.Registry, State: s.State, Sources: s.Sources, Locker: s.Locker,
		Config: Config{WorkDir: t.TempDir(), AnnounceList: [][]string{}}, Logger: s.Logger}, prometheus.NewRegistry())
}

// putBuild overwrites community c's committed state with b.
func putBuild(t *testing.T, st *state.Store, c string, b *state.Build) {
	t.Helper()
	_, rev, err := st.GetBuild(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(context.Background(), c, b, rev); err != nil {
		t.Fatal(err)
	}
}
