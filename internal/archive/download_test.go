package archive

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"

	"github.com/archivefleet/archivefleet/internal/testenv"
)

// TestMemberDownloadsOneArchive seeds a built torrent and has a second client,
// given only the magnet link with the seeder's address, fetch the index and then
// only the pieces of one chosen archive, as a status-go member does, and
// extract its messages.
func TestMemberDownloadsOneArchive(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		t.Run(fmt.Sprintf("encrypted=%v", encrypted), func(t *testing.T) {
			testMemberDownload(t, encrypted)
		})
	}
}

func testMemberDownload(t *testing.T, encrypted bool) {
	c := testCommunity(t, 51)
	l := testLayout(t)
	msgs := genMessages(4, 600, 1_700_000_000, 4*week, 900)
	o := BuildOptions{Community: c, Topics: testTopics, From: 1_700_000_000, To: 1_700_000_000 + 4*week,
		Source: NewSliceSource(msgs), Torrent: TorrentOptions{AnnounceList: [][]string{}}}
	var dec Decrypter
	if encrypted {
		r := newTestRatchet(t, c)
		o.Encrypter, o.Decrypter = r, r
		dec = &HashRatchet{Community: c, Keys: []RatchetKey{r.State.Key}}
	}
	mustBuild(t, l, o)

	seeder := testenv.TorrentClient(t, l.DataDir, true)
	mi, err := metainfo.LoadFromFile(l.TorrentPath(c))
	if err != nil {
		t.Fatal(err)
	}
	st, err := seeder.AddTorrent(mi)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := st.VerifyDataContext(ctx); err != nil {
		t.Fatal(err)
	}
	// Completion is published asynchronously after verification.
	testenv.Eventually(t, 60*time.Second, func() bool { return st.Complete().Bool() }, "seeder to hold the complete torrent")
	peer := fmt.Sprintf("127.0.0.1:%d", seeder.LocalPort())
	// Rebuild the magnet with the seeder's real port, as the fleet does.
	magnet := Magnet(mi, c.String(), []string{peer})

	memberDir := t.TempDir()
	member := testenv.TorrentClient(t, memberDir, false)
	mt, err := member.AddMagnet(magnet)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-mt.GotInfo():
	case <-ctx.Done():
		t.Fatal("no metadata from the seeder")
	}
	var indexFile *torrent.File
	for _, f := range mt.Files() {
		if f.DisplayPath() == IndexFile {
			indexFile = f
		}
	}
	if indexFile == nil {
		t.Fatal("torrent has no file named index")
	}
	indexFile.Download()
	testenv.Await(ctx, t, mt, []string{peer}, "index", func() bool { return indexFile.BytesCompleted() == indexFile.Length() })

	raw := readAllFile(t, indexFile)
	ix, err := DecodeIndex(raw, dec, -1, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	entries := ix.ByFrom()
	if len(entries) < 3 {
		t.Fatalf("only %d archives", len(entries))
	}
	chosen := entries[2]
	start, end := chosen.Pieces()
	mt.DownloadPieces(start, end)
	testenv.Await(ctx, t, mt, []string{peer}, "archive pieces", func() bool {
		for i := start; i < end; i++ {
			if !mt.PieceState(i).Complete {
				return false
			}
		}
		return true
	})
	// Only the chosen archive's pieces (and the index's) were fetched.
	if other := entries[0]; other.Offset != chosen.Offset {
		s, _ := other.Pieces()
		if mt.PieceState(s).Complete {
			t.Fatalf("piece %d of an archive not asked for was downloaded", s)
		}
	}
	data, err := os.Open(filepath.Join(memberDir, c.String(), DataFile))
	if err != nil {
		t.Fatal(err)
	}
	defer data.Close()
	a, err := ReadArchive(data, chosen, dec)
	if err != nil {
		t.Fatal(err)
	}
	var want []Message
	for _, m := range sortedMessages(msgs) {
		if m.Timestamp >= chosen.From && m.Timestamp < chosen.To {
			want = append(want, m)
		}
	}
	if len(a.Messages) == 0 || !reflect.DeepEqual(normalize(a.Messages), normalize(want[:len(a.Messages)])) {
		t.Fatalf("downloaded archive holds %d messages that differ from the %d built for its window", len(a.Messages), len(want))
	}
}

func readAllFile(t *testing.T, f *torrent.File) []byte {
	t.Helper()
	r := f.NewReader()
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
