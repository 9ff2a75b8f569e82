package archive

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from the current build")

// goldenInput is fixed: a community, three topics, messages over three weekly
// windows plus one in a fourth, two runs (the second extends the first).
const goldenCommunitySeed = 42

func goldenMessages(t *testing.T) []Message {
	path := filepath.Join("testdata", "golden", "messages.jsonl")
	if *update {
		msgs := genMessages(77, 40, 1_700_000_000, 3*week, 120)
		msgs = append(msgs, genMessages(78, 5, 1_700_000_000+3*week, week, 80)...)
		var buf bytes.Buffer
		for _, m := range msgs {
			b, _ := json.Marshal(m)
			buf.Write(append(b, '\n'))
		}
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []Message
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m, err := DecodeMessageJSON(sc.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// TestGolden pins the bytes of data, index and torrent, the infohash and the
// magnet for fixed input, after a first run and after an extending run.
func TestGolden(t *testing.T) {
	c := testCommunity(t, goldenCommunitySeed)
	msgs := goldenMessages(t)
	l := testLayout(t)
	opts := TorrentOptions{CreatedBy: "archivefleet golden", Peers: []string{"127.0.0.1:9025"}}
	runs := []struct {
		name     string
		from, to uint64
	}{
		{"run1", 1_700_000_000, 1_700_000_000 + 3*week},
		{"run2", 1_700_000_000 + 3*week, 1_700_000_000 + 4*week},
	}
	for _, r := range runs {
		res := mustBuild(t, l, BuildOptions{Community: c, Topics: testTopics, From: r.from, To: r.to,
			Source: NewSliceSource(msgs), Torrent: opts})
		got := map[string][]byte{
			"data":     readFile(t, filepath.Join(l.ArchiveDir(c), DataFile)),
			"index":    readFile(t, filepath.Join(l.ArchiveDir(c), IndexFile)),
			"torrent":  readFile(t, l.TorrentPath(c)),
			"infohash": []byte(res.InfoHash + "\n"),
			"magnet":   []byte(res.Magnet + "\n"),
			"ids":      []byte(strings.Join(res.ArchiveIDs, "\n") + "\n"),
		}
		for name, b := range got {
			path := filepath.Join("testdata", "golden", r.name+"."+name)
			if *update {
				if err := os.WriteFile(path, b, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			want := readFile(t, path)
			if !bytes.Equal(b, want) {
				t.Errorf("%s %s: %d bytes differ from the golden %d bytes", r.name, name, len(b), len(want))
			}
		}
	}
}
