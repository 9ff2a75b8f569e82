package ctl

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

const fetchStart = 1_700_000_000

// fetchSource is a community's archive folder seeded by an anacrolix client
// on 127.0.0.1.
type fetchSource struct {
	c      archive.CommunityID
	l      archive.Layout
	enc    *archive.HashRatchet // nil: plain
	seeder *torrent.Client
	st     *torrent.Torrent // the torrent seeded now
}

func newFetchSource(t *testing.T, enc bool) *fetchSource {
	t.Helper()
	d := t.TempDir()
	s := &fetchSource{c: fixture.ID(fixture.Key()), l: archive.Layout{DataDir: filepath.Join(d, "archivedata"), TorrentDir: filepath.Join(d, "torrents")}}
	if enc {
		s.enc = &archive.HashRatchet{Community: s.c, InstallationID: "f3a1c2d4-0000-4000-8000-fetchtest",
			State: &archive.RatchetState{Key: archive.RatchetKey{Timestamp: 1_700_000_000_123, Key: bytes.Repeat([]byte{7}, 32)}}}
	}
	s.seeder = testenv.TorrentClient(t, s.l.DataDir, true)
	return s
}

// build appends hourly archives of [from, to) holding n messages of 4 KB
// (about three pieces an archive) and seeds the new torrent instead of the
// previous one.
func (s *fetchSource) build(t *testing.T, from, to uint64, n int) *archive.BuildResult {
	t.Helper()
	msgs := fixture.Messages{N: n, From: from, To: to, Size: 4000, Topics: []archive.Topic{{0xa0, 0, 0, 1}, {0xa0, 0, 0, 2}}}.Make()
	o := archive.BuildOptions{Community: s.c, Topics: []archive.Topic{{0xa0, 0, 0, 1}, {0xa0, 0, 0, 2}}, From: from, To: to,
		Interval: time.Hour, Source: archive.NewSliceSource(msgs), Torrent: archive.TorrentOptions{AnnounceList: [][]string{}}}
	if s.enc != nil {
		o.Encrypter, o.Decrypter = s.enc, s.enc
	}
	if s.st != nil {
		s.st.Drop() // its files are about to grow
		s.st = nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := archive.Build(ctx, s.l, o)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	mi, err := metainfo.LoadFromFile(s.l.TorrentPath(s.c))
	if err != nil {
		t.Fatal(err)
	}
	if s.st, err = s.seeder.AddTorrent(mi); err != nil {
		t.Fatal(err)
	}
	if err := s.st.VerifyDataContext(ctx); err != nil {
		t.Fatal(err)
	}
	for !s.st.Complete().Bool() { // published asynchronously after the check
		if ctx.Err() != nil {
			t.Fatal("seeder does not hold the complete torrent")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return res
}

func (s *fetchSource) peer() string { return fmt.Sprintf("127.0.0.1:%d", s.seeder.LocalPort()) }

// magnet is the current torrent's link, with x.pe peers.
func (s *fetchSource) magnet(t *testing.T, peers ...string) string {
	t.Helper()
	mi, err := metainfo.LoadFromFile(s.l.TorrentPath(s.c))
	if err != nil {
		t.Fatal(err)
	}
	return archive.Magnet(mi, s.c.String(), peers)
}

// messages returns the JSON lines of every message of the built folder,
// oldest archive first, and its index.
func (s *fetchSource) messages(t *testing.T) (string, *archive.Index) {
	t.Helper()
	var dec archive.Decrypter
	if s.enc != nil {
		dec = &archive.HashRatchet{Community: s.c, Keys: append([]archive.RatchetKey{s.enc.State.Key}, s.enc.Keys...)}
	}
	msgs, ix, err := fixture.ReadFolder(s.l.ArchiveDir(s.c), dec)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := writeJSONLines(&b, msgs); err != nil {
		t.Fatal(err)
	}
	return b.String(), ix
}

func fetchRun(t *testing.T, args ...string) (*fetchResult, string, int) {
	t.Helper()
	out, errs, code := run(t, "", append([]string{"fetch", "-listen", "127.0.0.1:0", "-metadata-timeout", "10s", "-stall-timeout", "10s"}, args...)...)
	var res *fetchResult
	if out != "" {
		res = new(fetchResult)
		if err := json.Unmarshal([]byte(out), res); err != nil {
			t.Fatalf("fetch output %q: %v", out, err)
		}
	}
	return res, errs, code
}

func readRecord(t *testing.T, dir string, c archive.CommunityID) memberRecord {
	t.Helper()
	var rec memberRecord
	if err := json.Unmarshal([]byte(mustReadFile(t, filepath.Join(dir, c.String(), fetchSeenFile))), &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

func piecesOf(entries []archive.Entry, ids []string) (n int) {
	for _, e := range entries {
		if slices.Contains(ids, e.ID) {
			s, end := e.Pieces()
			n += end - s
		}
	}
	return n
}

// TestFetchIncremental: a member fetches v1 of a community's torrent from a
// seeder given with -peer, then v2 (v1 plus newer archives) from its magnet's
// x.pe: the second run downloads the index and the new archives' pieces and
// nothing of the old archives, and messages.jsonl ends up holding every
// message once, oldest archive first. An interrupted append left in
// messages.jsonl is cut off; a third run of the same magnet fetches nothing.
func TestFetchIncremental(t *testing.T) {
	src := newFetchSource(t, false)
	v1 := src.build(t, fetchStart, fetchStart+3*3600, 180)
	want1, ix1 := src.messages(t)
	if len(v1.ArchiveIDs) != 3 || len(ix1.Entries) != 3 {
		t.Fatalf("v1 has %d archives, want 3", len(v1.ArchiveIDs))
	}
	dir := t.TempDir()
	folder := filepath.Join(dir, src.c.String())

	// (1) v1, the seeder given with -peer, progress lines asked for.
	res, errs, code := fetchRun(t, "-dir", dir, "-peer", src.peer(), "-progress", src.magnet(t))
	if code != 0 {
		t.Fatalf("fetch v1: exit %d: %s", code, errs)
	}
	if !slices.Equal(res.Imported, v1.ArchiveIDs) || res.AlreadyImported != 0 || res.Archives != 3 || res.Messages != 180 {
		t.Fatalf("fetch v1: %+v, want the 3 archives %v", res, v1.ArchiveIDs)
	}
	if got := mustReadFile(t, res.MessagesFile); got != want1 {
		t.Fatalf("messages.jsonl holds %d lines, want v1's %d messages in order", strings.Count(got, "\n"), strings.Count(want1, "\n"))
	}
	if rec := readRecord(t, dir, src.c); !slices.Equal(rec.Archives, v1.ArchiveIDs) || rec.Community != src.c.String() {
		t.Fatalf("seen.json %+v, want v1's ids", rec)
	}
	for _, want := range []string{"index: 3 archives, 0 already imported, 3 to fetch", "archive 1/3 ", "archive 3/3 ", "60 messages imported"} {
		if !strings.Contains(errs, want) {
			t.Fatalf("progress lacks %q:\n%s", want, errs)
		}
	}
	// The member's folder is a complete archive folder.
	if got, _, err := fixture.ReadFolder(folder, nil); err != nil || len(got) != 180 {
		t.Fatalf("member folder: %d messages, %v", len(got), err)
	}

	// (2) v2 appends two archives; the seeder now serves only v2.
	v2 := src.build(t, fetchStart+3*3600, fetchStart+5*3600, 120)
	want2, ix2 := src.messages(t)
	if len(v2.ArchiveIDs) != 2 || len(ix2.Entries) != 5 || !strings.HasPrefix(want2, want1) {
		t.Fatalf("v2: %d new archives, %d in all", len(v2.ArchiveIDs), len(ix2.Entries))
	}
	// A run interrupted after appending an archive's messages, before recording it.
	f, err := os.OpenFile(res.MessagesFile, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"sig":"0x04`)
	f.Close()
	magnet2 := src.magnet(t, src.peer())
	res, errs, code = fetchRun(t, "-dir", dir, "-quiet", magnet2)
	if code != 0 {
		t.Fatalf("fetch v2: exit %d: %s", code, errs)
	}
	if !slices.Equal(res.Imported, v2.ArchiveIDs) || res.AlreadyImported != 3 || res.Archives != 5 || res.Messages != 120 {
		t.Fatalf("fetch v2: %+v, want only the new archives %v", res, v2.ArchiveIDs)
	}
	if !strings.Contains(errs, "interrupted run") || strings.Contains(errs, "archive 1/") {
		t.Fatalf("stderr of a -quiet run with a torn messages.jsonl: %q", errs)
	}
	if got := mustReadFile(t, res.MessagesFile); got != want2 {
		t.Fatalf("messages.jsonl holds %d lines, want v1+v2's %d messages, each once", strings.Count(got, "\n"), strings.Count(want2, "\n"))
	}
	if rec := readRecord(t, dir, src.c); !slices.Equal(rec.Archives, append(slices.Clone(v1.ArchiveIDs), v2.ArchiveIDs...)) || rec.LastMagnet != magnet2 {
		t.Fatalf("seen.json %+v", rec)
	}
	// Only the index's and the new archives' pieces were fetched: the member
	// completed exactly those, and the seeder sent no more bytes than they hold.
	indexPieces := int((v2.IndexBytes + archive.PieceLength - 1) / archive.PieceLength)
	newPieces := piecesOf(ix2.Entries, v2.ArchiveIDs)
	oldPieces := piecesOf(ix2.Entries, v1.ArchiveIDs)
	wantBytes := int64(newPieces)*archive.PieceLength + v2.IndexBytes
	stats := src.st.Stats()
	sent := stats.BytesWrittenData.Int64()
	t.Logf("v2: %d index + %d new pieces fetched (%d bytes read, seeder sent %d); %d old pieces not", indexPieces, newPieces,
		res.BytesDownloaded, sent, oldPieces)
	if oldPieces < 9 || res.PiecesDownloaded != indexPieces+newPieces {
		t.Fatalf("member completed %d pieces, want %d index + %d new (not the %d old)", res.PiecesDownloaded, indexPieces, newPieces, oldPieces)
	}
	if sent > wantBytes || res.BytesDownloaded > wantBytes || res.BytesDownloaded < wantBytes-archive.PieceLength {
		t.Fatalf("seeder sent %d bytes, member read %d; the index and new archives hold %d", sent, res.BytesDownloaded, wantBytes)
	}
	if got, _, err := fixture.ReadFolder(folder, nil); err != nil || len(got) != 300 {
		t.Fatalf("member folder after v2: %d messages, %v", len(got), err)
	}

	// (3) The same magnet again: the index only, nothing new.
	res, errs, code = fetchRun(t, "-dir", dir, magnet2)
	if code != 0 || len(res.Imported) != 0 || res.AlreadyImported != 5 || res.PiecesDownloaded != indexPieces {
		t.Fatalf("fetch v2 again: exit %d %+v: %s", code, res, errs)
	}
	if got := mustReadFile(t, res.MessagesFile); got != want2 {
		t.Fatal("messages.jsonl changed on a run with nothing new")
	}
}

// TestFetchEncrypted: a token-gated community's index and archives are
// sealed. Without a key fetch says so and imports nothing; with -ratchet-key
// (the key alone, its timestamp found from the headers) it imports
// everything; a wrong key is named as such. After the community's key
// rotates, a new member given only the new key imports the new archive and
// skips the old ones, saying why, and fetches them on a run given both keys.
func TestFetchEncrypted(t *testing.T) {
	src := newFetchSource(t, true)
	keyA := src.enc.State.Key
	v1 := src.build(t, fetchStart, fetchStart+2*3600, 80)
	want1, _ := src.messages(t)
	dir := t.TempDir()
	res, errs, code := fetchRun(t, "-dir", dir, "-peer", src.peer(), src.magnet(t))
	if code != 1 || res != nil || !strings.Contains(errs, "index is encrypted") || !strings.Contains(errs, "-ratchet-key") {
		t.Fatalf("without a key: exit %d, %+v, %s", code, res, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, src.c.String(), fetchMessagesFile)); !os.IsNotExist(err) {
		t.Fatalf("messages.jsonl written without a key: %v", err)
	}
	hexA := hex.EncodeToString(keyA.Key)
	res, errs, code = fetchRun(t, "-dir", dir, "-peer", src.peer(), "-ratchet-key", "0x"+hexA, src.magnet(t))
	if code != 0 || !slices.Equal(res.Imported, v1.ArchiveIDs) {
		t.Fatalf("with the key: exit %d, %+v, %s", code, res, errs)
	}
	if got := mustReadFile(t, res.MessagesFile); got != want1 {
		t.Fatalf("messages.jsonl holds %d lines, want %d", strings.Count(got, "\n"), strings.Count(want1, "\n"))
	}
	res, errs, code = fetchRun(t, "-dir", t.TempDir(), "-peer", src.peer(), "-ratchet-key", strings.Repeat("ab", 32), src.magnet(t))
	if code != 1 || !strings.Contains(errs, "key not given") {
		t.Fatalf("wrong key: exit %d, %+v, %s", code, res, errs)
	}

	// The key rotates: v2's archive and the index are sealed with key B.
	keyB := archive.RatchetKey{Timestamp: 1_700_100_000_456, Key: bytes.Repeat([]byte{9}, 32)}
	src.enc = &archive.HashRatchet{Community: src.c, InstallationID: src.enc.InstallationID,
		State: &archive.RatchetState{Key: keyB}, Keys: []archive.RatchetKey{keyA}}
	v2 := src.build(t, fetchStart+2*3600, fetchStart+3*3600, 40)
	want2, _ := src.messages(t)
	onlyB := fmt.Sprintf("%d:%s", keyB.Timestamp, hex.EncodeToString(keyB.Key))
	// The member holding v1 needs only key B.
	res, errs, code = fetchRun(t, "-dir", dir, "-peer", src.peer(), "-ratchet-key", onlyB, src.magnet(t))
	if code != 0 || !slices.Equal(res.Imported, v2.ArchiveIDs) || mustReadFile(t, res.MessagesFile) != want2 {
		t.Fatalf("v2 with key B: exit %d, %+v, %s", code, res, errs)
	}
	// A new member with key B alone: v1's archives are skipped, not recorded.
	fresh := t.TempDir()
	res, errs, code = fetchRun(t, "-dir", fresh, "-peer", src.peer(), "-ratchet-key", onlyB, src.magnet(t))
	if code != 1 || res == nil || !slices.Equal(res.Imported, v2.ArchiveIDs) || len(res.Skipped) != 2 ||
		!strings.Contains(res.Skipped[0].Reason, "key not given") || !strings.Contains(errs, "2 of 3 archives not imported") ||
		!strings.Contains(errs, "archive "+v1.ArchiveIDs[0]+" ") {
		t.Fatalf("key B alone: exit %d, %+v, %s", code, res, errs)
	}
	if rec := readRecord(t, fresh, src.c); !slices.Equal(rec.Archives, v2.ArchiveIDs) {
		t.Fatalf("seen.json %+v", rec)
	}
	res, errs, code = fetchRun(t, "-dir", fresh, "-peer", src.peer(), "-ratchet-key", onlyB, "-ratchet-key", hexA, src.magnet(t))
	if code != 0 || !slices.Equal(res.Imported, v1.ArchiveIDs) {
		t.Fatalf("both keys: exit %d, %+v, %s", code, res, errs)
	}
	if got, want := hashes(t, mustReadFile(t, res.MessagesFile)), hashes(t, want2); !slices.Equal(got, want) {
		t.Fatalf("messages.jsonl holds %d messages, want the %d of v2, each once", len(got), len(want))
	}
}

// TestFetchMetadataTimeout: with no reachable peer fetch gives up after
// -metadata-timeout with an error saying so.
func TestFetchMetadataTimeout(t *testing.T) {
	dir := t.TempDir()
	magnet := "magnet:?xt=urn:btih:" + strings.Repeat("5a", 20) + "&dn=nobody"
	start := time.Now()
	_, errs, code := run(t, "", "fetch", "-dir", dir, "-listen", "127.0.0.1:0", "-no-trackers", "-metadata-timeout", "1s",
		"-peer", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), magnet)
	took := time.Since(start)
	if code != 1 || !strings.Contains(errs, "no metadata for "+strings.Repeat("5a", 20)+" within 1s: no peer reachable") ||
		!strings.Contains(errs, "DHT off, trackers off, 1 direct peers") {
		t.Fatalf("exit %d, stderr %q", code, errs)
	}
	if took > 5*time.Second {
		t.Fatalf("gave up after %v, want about 1s", took)
	}
}

func TestFetchBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-h"}, 0, "usage: archivectl fetch [flags] MAGNET"},
		{[]string{"-bogus"}, 2, "flag provided but not defined: -bogus"},
		{nil, 2, "usage: archivectl fetch"},
		{[]string{"https://example.org/x.torrent"}, 1, "bad magnet link"},
		{[]string{"magnet:?xt=urn:btih:zz"}, 1, "bad magnet link"},
		{[]string{"-peer", "nohost", "magnet:?xt=urn:btih:" + strings.Repeat("5a", 20)}, 1, `-peer "nohost"`},
		{[]string{"-peer", "127.0.0.1:0", "magnet:?xt=urn:btih:" + strings.Repeat("5a", 20)}, 1, "bad port"},
		{[]string{"-ratchet-key", "12:abcd", "magnet:?xt=urn:btih:" + strings.Repeat("5a", 20)}, 1, "32-byte key"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			stdout, stderr, code := run(t, "", append([]string{"fetch", "-dir", t.TempDir()}, tc.args...)...)
			if code != tc.code || !strings.Contains(stderr, tc.want) || stdout != "" {
				t.Fatalf("exit %d (want %d), stderr %q (want %q), stdout %q", code, tc.code, stderr, tc.want, stdout)
			}
		})
	}
}

// TestFetchFromFleet: a fleet (all-in-one, embedded NATS, its tracker on)
// archives ingested messages and announces a magnet; fetch, given just that
// link, imports every message. After more messages and a new build, fetch
// of the new magnet with its x.pe removed (the seeder found through the
// fleet tracker) imports only the new archives.
func TestFetchFromFleet(t *testing.T) {
	cfg, _ := startAllInOne(t, time.Second, true)
	// Ready when archivectl reaches its NATS and its HTTP ingest listens.
	testenv.Eventually(t, 30*time.Second, func() bool {
		if _, _, code := run(t, "", "community", "list"); code != 0 {
			return false
		}
		c, err := net.DialTimeout("tcp", cfg.HTTPAddr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "the fleet's NATS and HTTP ingest")

	key := fixture.Key()
	id := fixture.ID(key)
	mustRun(t, "", "community", "add", "-private-key", "0x"+hex.EncodeToString(key), "-interval", "1m", "-since", "now-10m")
	topic := registry.UniversalTopic(id)
	ingest := func(msgs []archive.Message) {
		t.Helper()
		var body bytes.Buffer
		writeJSONLines(&body, msgs)
		resp, err := http.Post(fmt.Sprintf("http://%s/v1/communities/%s/messages", cfg.HTTPAddr, id), "application/x-ndjson", &body)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("ingest: HTTP %d", resp.StatusCode)
		}
	}
	// archived triggers a build up to now and returns the magnet announced for it.
	archived := func(prev string) (magnet string, end uint64) {
		t.Helper()
		now := uint64(time.Now().Unix())
		mustRun(t, "", "trigger", "-community", id.String())
		testenv.Eventually(t, 30*time.Second, func() bool {
			var row struct {
				Magnet, InfoHash string
				LastEnd          uint64
			}
			out, _, code := run(t, "", "community", "list", "-json")
			if code != 0 || json.Unmarshal([]byte(out), &row) != nil {
				return false
			}
			magnet, end = row.Magnet, row.LastEnd
			return end >= now && row.InfoHash != "" && strings.Contains(magnet, row.InfoHash) && magnet != prev
		}, "the trigger's build announced")

		return magnet, end
	}
	now := uint64(time.Now().Unix())
	batch1 := fixture.Messages{N: 100, From: now - 300, To: now - 2, Topics: []archive.Topic{topic}, Size: 2000}.Make()
	ingest(batch1)
	magnet1, end1 := archived("")
	if !strings.Contains(magnet1, "x.pe=") || !strings.Contains(magnet1, url.QueryEscape("http://"+cfg.TrackerListen+"/announce")) {
		t.Fatalf("announced magnet %s lacks x.pe or the fleet tracker", magnet1)
	}
	// The all-in-one's seeder is the one the community is placed on, and
	// serves it.
	testenv.Eventually(t, 10*time.Second, func() bool {
		var row struct{ Seeders, PlacedOn []string }
		out, _, code := run(t, "", "community", "list", "-json")
		return code == 0 && json.Unmarshal([]byte(out), &row) == nil && len(row.PlacedOn) == 1 &&
			slices.Equal(row.Seeders, row.PlacedOn)
	}, "list showing the seeder serving")

	if list := mustRun(t, "", "community", "list"); !strings.Contains(list, "SEEDS") || !strings.Contains(list, " 1/1 ") {
		t.Fatalf("list does not show the one seeder serving: %s", list)
	}
	member := t.TempDir()
	res1, errs, code := fetchRun(t, "-dir", member, magnet1)
	if code != 0 || len(res1.Imported) == 0 || res1.Messages != len(batch1) {
		t.Fatalf("fetch of the announced magnet: exit %d %+v: %s", code, res1, errs)
	}
	var want bytes.Buffer
	writeJSONLines(&want, batch1)
	if got := hashes(t, mustReadFile(t, res1.MessagesFile)); !slices.Equal(got, hashes(t, want.String())) {
		t.Fatalf("member imported %d messages, want the %d ingested", len(got), len(batch1))
	}

	for uint64(time.Now().Unix()) < end1+2 {
		time.Sleep(100 * time.Millisecond)
	}
	batch2 := fixture.Messages{N: 30, From: end1, To: uint64(time.Now().Unix()), Topics: []archive.Topic{topic}, Size: 2000}.Make()
	ingest(batch2)
	magnet2, _ := archived(magnet1)
	m, err := metainfo.ParseMagnetUri(magnet2)
	if err != nil {
		t.Fatal(err)
	}
	delete(m.Params, "x.pe")
	res2, errs, code := fetchRun(t, "-dir", member, m.String())
	if code != 0 || res2.AlreadyImported != len(res1.Imported) || len(res2.Imported) == 0 || res2.Messages != len(batch2) {
		t.Fatalf("fetch of the new magnet through the tracker: exit %d %+v (first run imported %d): %s", code, res2, len(res1.Imported), errs)
	}
	writeJSONLines(&want, batch2)
	if got := hashes(t, mustReadFile(t, res2.MessagesFile)); !slices.Equal(got, hashes(t, want.String())) {
		t.Fatalf("member holds %d messages, want the %d ingested, each once", len(got), len(batch1)+len(batch2))
	}
}
