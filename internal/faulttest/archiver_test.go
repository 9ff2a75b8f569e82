package faulttest

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/state"
)

// TestArchiverKilledMidBuild kills an archiver with SIGKILL while it builds:
// the event is redelivered, a second archiver takes the lock only once the
// first lease expired (with a larger fence), and what it publishes is
// byte-identical to an undisturbed build of the same range. The seeder never
// seeds anything but the committed torrent.
func TestArchiverKilledMidBuild(t *testing.T) {
	e := newEnv(t)
	const lockTTL = 5 * time.Second
	now := uint64(time.Now().Unix())
	since := now - 2*3600
	com := e.register(time.Hour, since)
	msgs := sampleMessages(com, 40000, 1500, since, since+2*3600) // 60 MB: a build that takes a while
	e.ingest(com, msgs)
	seeder := e.start("seeder", "seeder", "ARCHIVEFLEET_SEED_DIR="+filepath.Join(e.dir, "seed"), "ARCHIVEFLEET_BT_LISTEN=127.0.0.1:0",
		"ARCHIVEFLEET_BT_DHT=false", "ARCHIVEFLEET_BT_TRACKERS=false")
	archiverEnv := []string{"ARCHIVEFLEET_LOCK_TTL=" + lockTTL.String(), "ARCHIVEFLEET_SLOTS=1"}
	a := e.start("archiver-a", "archiver", append(archiverEnv, "ARCHIVEFLEET_WORK_DIR="+filepath.Join(e.dir, "a"))...)
	end := since + 2*3600
	e.due(com, since, end, "")
	startA := lineTime(t, a.waitLog(t, 30*time.Second, "build started", "fence=1"))
	a.kill()
	if b := e.build(com); b.LastEnd != 0 {
		t.Fatal("the build finished before the kill; the test needs a longer build")
	}
	b := e.start("archiver-b", "archiver", append(archiverEnv, "ARCHIVEFLEET_WORK_DIR="+filepath.Join(e.dir, "b"))...)
	got := e.waitBuilt(com, end, 90*time.Second)
	startB := lineTime(t, b.waitLog(t, time.Second, "build started", "fence=2"))
	if got.Fence != 2 {
		t.Fatalf("committed under fence %d, want 2 (the lock taken over once)", got.Fence)
	}
	if wait := startB.Sub(startA); wait < lockTTL-200*time.Millisecond {
		t.Fatalf("second archiver built %v after the first: before the %v lease could expire", wait, lockTTL)
	}

	// The undisturbed reference: the same messages and range, built locally.
	l := archive.Layout{DataDir: filepath.Join(e.dir, "ref", "data"), TorrentDir: filepath.Join(e.dir, "ref", "torrents")}
	ref, err := archive.Build(context.Background(), l, archive.BuildOptions{Community: com.ID, Topics: com.Topics, From: since, To: end,
		Interval: time.Hour, Source: archive.NewSliceSource(msgs)})
	if err != nil {
		t.Fatal(err)
	}
	if ref.InfoHash != got.InfoHash {
		t.Fatalf("infohash %s differs from the undisturbed build's %s", got.InfoHash, ref.InfoHash)
	}
	c := com.ID.String()
	var data bytes.Buffer
	if _, err := state.FetchArchives(context.Background(), e.ctl, c, got.Archives, 0, &data); err != nil {
		t.Fatal(err)
	}
	refData, _ := os.ReadFile(filepath.Join(l.ArchiveDir(com.ID), archive.DataFile))
	refIndex, _ := os.ReadFile(filepath.Join(l.ArchiveDir(com.ID), archive.IndexFile))
	refTorrent, _ := os.ReadFile(l.TorrentPath(com.ID))
	index, _ := e.ctl.Objects.GetBytes(context.Background(), state.ObjectIndex(c, got.InfoHash))
	torrent, _ := e.ctl.Objects.GetBytes(context.Background(), state.ObjectTorrent(c, got.InfoHash))
	if !bytes.Equal(data.Bytes(), refData) || !bytes.Equal(index, refIndex) || !bytes.Equal(torrent, refTorrent) {
		t.Fatalf("published artefacts differ from the undisturbed build (data %d/%d, index %d/%d, torrent %d/%d bytes)",
			data.Len(), len(refData), len(index), len(refIndex), len(torrent), len(refTorrent))
	}
	t.Logf("FIGURES byte-for-byte: %d archives, %d data bytes, index %d bytes, torrent %d bytes identical to the undisturbed build",
		len(got.Archives), data.Len(), len(index), len(torrent))
	seeder.waitLog(t, 30*time.Second, "msg=seeding", got.InfoHash)
	for _, line := range strings.Split(seeder.log.String(), "\n") {
		if strings.Contains(line, "msg=seeding") && !strings.Contains(line, got.InfoHash) {
			t.Fatalf("seeder seeded something else: %s", line)
		}
	}
}
