package state_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// TestFetchCommitted stores a real build's torrent and index, then spoils
// them one way at a time: a spoiled object is ErrCorruptObject (no retry
// can fix it), a missing one is not (it may yet arrive).
func TestFetchCommitted(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	ctx := context.Background()
	id, err := archive.ParseCommunityID("0x02cfca2ca218f099107c5d4b61cb17bd6566137dbecf7e4557984c882a16accd87")
	if err != nil {
		t.Fatal(err)
	}
	c := id.String()
	l := archive.Layout{DataDir: filepath.Join(t.TempDir(), "d"), TorrentDir: filepath.Join(t.TempDir(), "t")}
	msgs := fixture.Messages{N: 50, From: 1_700_000_000, To: 1_700_000_050, Topics: []archive.Topic{{1}}, Size: 3000}.Make()
	res, err := archive.Build(ctx, l, archive.BuildOptions{Community: id, From: 1_700_000_000, To: 1_700_000_100,
		Source: archive.NewSliceSource(msgs)})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(l.ArchiveDir(id), archive.DataFile))
	index, _ := os.ReadFile(filepath.Join(l.ArchiveDir(id), archive.IndexFile))
	torrent, _ := os.ReadFile(l.TorrentPath(id))
	st := &state.Build{InfoHash: res.InfoHash, DataBytes: res.DataBytes}
	// Another infohash: the first byte changed (the messages, so the infohash, differ per run).
	first := "00"
	if strings.HasPrefix(res.InfoHash, first) {
		first = "11"
	}
	other := &state.Build{InfoHash: first + res.InfoHash[2:]}

	for _, tc := range []struct {
		name           string
		st             *state.Build
		torrent, index []byte // nil: not stored
		data           []byte
		corrupt        bool // want ErrCorruptObject
		ok             bool
	}{
		{"as built", st, torrent, index, data, false, true},
		{"torrent missing", st, nil, index, data, false, false},
		{"index missing", st, torrent, nil, data, false, false},
		{"torrent not bencode", st, []byte("garbage"), index, data, true, false},
		{"torrent of another infohash", other, torrent, index, data, true, false},
		{"index cut short", st, torrent, index[:len(index)-1], data, true, false},
		{"data changed", st, torrent, index, append(bytes.Clone(data[:len(data)-1]), data[len(data)-1]^1), true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for name, v := range map[string][]byte{state.ObjectTorrent(c, tc.st.InfoHash): tc.torrent, state.ObjectIndex(c, tc.st.InfoHash): tc.index} {
				b.Objects.Delete(ctx, name)
				if v != nil {
					if _, err := b.Objects.PutBytes(ctx, name, v); err != nil {
						t.Fatal(err)
					}
				}
			}
			cm, err := state.FetchCommitted(ctx, b, c, tc.st)
			if err == nil {
				if cm.DataBytes() != int64(len(tc.data)) {
					t.Fatalf("DataBytes = %d, want %d", cm.DataBytes(), len(tc.data))
				}
				err = cm.Verify(0, bytes.NewReader(tc.data))
			}
			if tc.ok != (err == nil) || tc.corrupt != errors.Is(err, state.ErrCorruptObject) {
				t.Fatalf("err = %v; want ok=%v, corrupt=%v", err, tc.ok, tc.corrupt)
			}
		})
	}
}
