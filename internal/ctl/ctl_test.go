package ctl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/archivefleet/archivefleet/internal/archive"
)

func run(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Main(context.Background(), Env{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb}, args)
	return out.String(), errb.String(), code
}

func mustRun(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, errs, code := run(t, stdin, args...)
	if code != 0 {
		t.Fatalf("archivectl %s: exit %d: %s", strings.Join(args, " "), code, errs)
	}
	return out
}

func hashes(t *testing.T, jsonl string) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(strings.NewReader(jsonl))
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		m, err := archive.DecodeMessageJSON(sc.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m.Hash.String())
	}
	slices.Sort(out)
	return out
}

// TestBuildExtendInspectExtract drives the CLI as an operator would, plain
// and encrypted: build, extend with more messages, inspect, extract.
func TestBuildExtendInspectExtract(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "encrypted"}[encrypted], func(t *testing.T) {
			dir := t.TempDir()
			keys := filepath.Join(dir, "keys.json")
			kg := []string{"keygen"}
			if encrypted {
				kg = append(kg, "-ratchet", keys)
			}
			var id struct{ Community string }
			if err := json.Unmarshal([]byte(mustRun(t, "", kg...)), &id); err != nil {
				t.Fatal(err)
			}
			const start = 1_700_000_000
			week1 := mustRun(t, "", "sample", "-n", "300", "-from", "1700000000", "-span", "504h", "-size", "500")
			week2 := mustRun(t, "", "sample", "-n", "100", "-from", "1701814400", "-span", "168h", "-size", "500")
			common := []string{"-community", id.Community, "-data-dir", filepath.Join(dir, "archivedata"),
				"-torrent-dir", filepath.Join(dir, "torrents"), "-no-trackers", "-peer", "127.0.0.1:9025"}
			if encrypted {
				common = append(common, "-keys", keys)
			}
			var res archive.BuildResult
			out := mustRun(t, week1, append([]string{"build", "-to", "1701814400"}, common...)...)
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(out, `\u0026`) {
				t.Fatal("magnet printed with escaped &")
			}
			if res.Messages != 300 || len(res.ArchiveIDs) != 3 || !strings.Contains(res.Magnet, "x.pe=127.0.0.1%3A9025") {
				t.Fatalf("first build: %+v", res)
			}
			// The extension reads both files; from defaults to the end of the newest archive.
			out = mustRun(t, week1+week2, append([]string{"build", "-to", "1702419200"}, common...)...)
			var res2 archive.BuildResult
			json.Unmarshal([]byte(out), &res2)
			if res2.From != 1701814400 || res2.Messages != 100 || res2.TotalEntries != 4 || res2.PiecesReused == 0 {
				t.Fatalf("extension: %+v", res2)
			}
			folder := filepath.Join(dir, "archivedata", id.Community)
			var rk []string
			if encrypted {
				rk = []string{"-keys", keys}
			}
			insp := mustRun(t, "", append(append([]string{"inspect"}, rk...), filepath.Join(dir, "torrents", id.Community+".torrent"))...)
			for _, want := range append(res.ArchiveIDs, res2.ArchiveIDs...) {
				if !strings.Contains(insp, want) {
					t.Fatalf("inspect lacks archive %s:\n%s", want, insp)
				}
			}
			if !strings.Contains(insp, res2.InfoHash) {
				t.Fatalf("inspect lacks infohash:\n%s", insp)
			}
			got := hashes(t, mustRun(t, "", append(append([]string{"extract"}, rk...), folder)...))
			if want := hashes(t, week1+week2); !slices.Equal(got, want) {
				t.Fatalf("extracted %d messages, want %d", len(got), len(want))
			}
			one := hashes(t, mustRun(t, "", append(append([]string{"extract", "-archive", res2.ArchiveIDs[0]}, rk...), folder)...))
			if len(one) != 100 {
				t.Fatalf("extract of the new archive gave %d messages, want 100", len(one))
			}
			if encrypted {
				if _, errs, code := run(t, "", "extract", folder); code == 0 || !strings.Contains(errs, "encrypted") {
					t.Fatalf("extract without keys: exit %d, %s", code, errs)
				}
				var kf keyFile
				json.Unmarshal([]byte(mustReadFile(t, keys)), &kf)
				// 3 archives + index, then 1 archive + index.
				if kf.State.SeqNo != 6 {
					t.Fatalf("ratchet state saved at seq %d, want 6", kf.State.SeqNo)
				}
			}
		})
	}
}

func mustReadFile(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	good := mustRun(t, "", "sample", "-n", "2")
	id := "0x02cfca2ca218f099107c5d4b61cb17bd6566137dbecf7e4557984c882a16accd87"
	base := []string{"build", "-data-dir", dir, "-torrent-dir", dir, "-to", "2000000000"}
	tests := []struct {
		name  string
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"no command", "", nil, 2, "usage"},
		{"unknown command", "", []string{"frobnicate"}, 2, "unknown command"},
		{"bad community", good, append(base, "-community", "0x../../etc"), 1, "invalid community id"},
		{"bad json", good + "{not json\n", append(base, "-community", id), 1, "line 3"},
		{"unknown field", `{"sig":"0x04","bogus":1}` + "\n", append(base, "-community", id), 1, "line 1"},
		{"short sig", `{"sig":"0x04","timestamp":5,"topic":"0x00000001","payload":"0x","hash":"0x01"}` + "\n", append(base, "-community", id), 1, "sig must be"},
		{"bad topic", "", append(base, "-community", id, "-topic", "0x1234"), 1, "want 4 bytes"},
		{"extra args", "", []string{"extract", "a", "b"}, 2, "usage"},
		{"missing folder", "", []string{"extract", filepath.Join(dir, "nope")}, 1, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errs, code := run(t, tt.stdin, tt.args...)
			if code != tt.code || !strings.Contains(errs, tt.want) {
				t.Fatalf("exit %d (want %d), stderr %q (want %q)", code, tt.code, errs, tt.want)
			}
		})
	}
}
