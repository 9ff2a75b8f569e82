package ctl

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/fixture"
)

// TestBuildSkipsOversizeMessage: a message over the 30,000,000-byte cap is
// skipped with a warning naming its hash, and the rest is archived (status-go
// drops such a message silently).
func TestBuildSkipsOversizeMessage(t *testing.T) {
	dir := t.TempDir()
	key := fixture.Key()
	id := fixture.ID(key)
	const start = 1_700_000_000
	msgs := fixture.Messages{N: 20, From: start, To: start + 3600}.Make()
	big := fixture.Messages{N: 1, From: start + 60, Size: archive.MaxMessageBytes - 64}.Make()[0] // payload+sig = cap + 1
	var in strings.Builder
	for _, m := range append(msgs, big) {
		b, _ := json.Marshal(m)
		in.Write(b)
		in.WriteByte('\n')
	}
	out, errs, code := run(t, in.String(), "build", "-community", id.String(), "-from", "1700000000", "-to", "1700007200",
		"-data-dir", filepath.Join(dir, "archivedata"), "-torrent-dir", filepath.Join(dir, "torrents"), "-no-trackers")
	if code != 0 {
		t.Fatalf("build exit %d: %s", code, errs)
	}
	if !strings.Contains(errs, "warning") || !strings.Contains(errs, big.Hash.String()) {
		t.Fatalf("no warning naming %s: %s", big.Hash, errs)
	}
	var res archive.BuildResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if res.Messages != len(msgs) || len(res.Skipped) != 1 {
		t.Fatalf("archived %d, skipped %d; want %d and 1", res.Messages, len(res.Skipped), len(msgs))
	}
	got := hashes(t, mustRun(t, "", "extract", filepath.Join(dir, "archivedata", id.String())))
	if len(got) != len(msgs) {
		t.Fatalf("extracted %d messages, want %d", len(got), len(msgs))
	}
}
