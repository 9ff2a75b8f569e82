package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/fleet"
	"github.com/archivefleet/archivefleet/internal/natsconf"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// readmeSection returns the shell blocks of a README section, one slice of
// lines per block.
func readmeSection(t *testing.T, heading string) [][]string {
	t.Helper()
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	i := strings.Index(s, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("README has no %q section", heading)
	}
	s = s[i+len(heading)+2:]
	if j := regexp.MustCompile(`\n#{2,3} `).FindStringIndex(s); j != nil {
		s = s[:j[0]]
	}
	var blocks [][]string
	for _, m := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(s, -1) {
		var lines []string
		for _, l := range strings.Split(m[1], "\n") {
			l = strings.TrimSpace(regexp.MustCompile(`\s+#.*$`).ReplaceAllString(l, ""))
			if l != "" {
				lines = append(lines, l)
			}
		}
		blocks = append(blocks, lines)
	}
	return blocks
}

// TestReadmeOperatingIt runs exactly the shell lines of README's "Operating
// it" against an all-in-one fleet (no demo) in this process, the
// archivectl lines through Main and the curl line with Go's HTTP client,
// and checks that every ingested message ends up archived: committed past
// the trigger, listed by `community list`, and written back by `extract`
// from the seeded folder. Placeholders are filled in as the README tells
// the reader to: 0x02… from keygen's output; the fleet's data dir,
// NATS and HTTP addresses are the test's own.
func TestReadmeOperatingIt(t *testing.T) {
	blocks := readmeSection(t, "### Operating it")
	if len(blocks) < 2 || len(blocks[0]) < 6 {
		t.Fatalf("README Operating it: %d blocks %v", len(blocks), blocks)
	}
	cfg, natsURL := startAllInOne(t, 2*time.Second, false)
	dir := filepath.Dir(cfg.DataDir)
	// Files the lines name (keygen -out, -private-key-file, > and @) are
	// in dir, as in the reader's working directory.
	t.Chdir(dir)
	c := natsconf.DefaultCommon()
	c.NATSURL = natsURL
	var b interface{ Close() }
	var states *state.Store
	for end := time.Now().Add(30 * time.Second); ; {
		bb, err := c.Connect(context.Background(), "test", testenv.Logger())
		if err == nil {
			b, states = bb.NC, &state.Store{KV: bb.State}
			break
		}
		if time.Now().After(end) {
			t.Fatalf("fleet not reachable: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	defer b.Close()

	var id, key string
	var sampleFile string
	var triggered int64
	fetched := false
	fill := func(l string) string {
		if id != "" {
			l = strings.ReplaceAll(l, "0x02…", id)
			l = strings.ReplaceAll(l, "0x…", key)
		}
		l = strings.ReplaceAll(l, "127.0.0.1:9100", cfg.HTTPAddr)
		l = strings.ReplaceAll(l, ".fleet/", cfg.DataDir+"/")
		if strings.Contains(l, "…") && !strings.HasPrefix(l, "aria2c ") {
			t.Fatalf("placeholder left in %q", l)
		}
		return l
	}
	archivedHashes := func() ([]string, error) {
		var out, errb bytes.Buffer
		if code := Main(context.Background(), Env{Stdout: &out, Stderr: &errb}, []string{"extract", filepath.Join(cfg.DataDir, "seeder", id)}); code != 0 {
			return nil, fmt.Errorf("extract: %s", errb.String())
		}
		return hashes(t, out.String()), nil
	}
	for bi, block := range blocks {
		for _, line := range block {
			line = fill(line)
			t.Logf("$ %s", line)
			f := strings.Fields(line)
			if strings.HasPrefix(line, "aria2c ") {
				fetchAnnounced(t, states, f, id, filepath.Join(cfg.DataDir, "seeder", id))
				fetched = true
				continue
			}
			if strings.ContainsAny(line, `"'|;&$`) {
				t.Fatalf("line %q needs a shell; keep README lines to plain arguments and > redirection", line)
			}
			switch {
			case strings.HasPrefix(line, "curl "):
				ctype, ok := strings.CutPrefix(f[4], "Content-Type:")
				if len(f) != 8 || f[1] != "-X" || f[2] != "POST" || f[3] != "-H" || !ok || f[5] != "--data-binary" || !strings.HasPrefix(f[6], "@") {
					t.Fatalf("curl line %q: want curl -X POST -H Content-Type:TYPE --data-binary @FILE URL", line)
				}
				body, err := os.ReadFile(filepath.Join(dir, f[6][1:]))
				if err != nil {
					t.Fatal(err)
				}
				resp, err := http.Post(f[7], ctype, bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				var res struct{ Stored, Late, Duplicates, Refused, Failed int }
				json.NewDecoder(resp.Body).Decode(&res)
				resp.Body.Close()
				if n := len(hashes(t, string(body))); resp.StatusCode != 200 || res.Stored+res.Late != n || res.Refused+res.Failed != 0 {
					t.Fatalf("ingest: HTTP %d %+v, want all %d messages kept", resp.StatusCode, res, n)
				}
				continue
			case strings.HasPrefix(line, "go run ./cmd/archivectl "):
			default:
				t.Fatalf("README line %q is neither archivectl nor curl", line)
			}
			args := f[3:]
			var redirect string
			if k := slices.Index(args, ">"); k >= 0 {
				if k != len(args)-2 {
					t.Fatalf("line %q: > must come last", line)
				}
				redirect, args = args[k+1], args[:k]
			}
			switch {
			case args[0] == "trigger":
				triggered = time.Now().Unix()
			case bi == 0 && args[0] == "community" && args[1] == "list":
				// A reader runs it again until the build shows; wait for it.
				testenv.Eventually(t, 60*time.Second, func() bool {
					bs, _, err := states.GetBuild(context.Background(), id)
					return err == nil && triggered > 0 && bs.LastEnd >= uint64(triggered)
				}, "the trigger's build")

			case args[0] == "extract":
				want := hashes(t, mustReadFile(t, sampleFile))
				testenv.Eventually(t, 60*time.Second, func() bool {
					got, err := archivedHashes()
					return err == nil && len(got) >= len(want)
				}, "the seeded folder to hold every sample message")

			}
			stdout := mustRun(t, "", args...)
			if redirect != "" {
				if err := os.WriteFile(filepath.Join(dir, redirect), []byte(stdout), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			switch {
			case args[0] == "keygen":
				var kg struct{ Community, PrivateKey string }
				if err := json.Unmarshal([]byte(stdout), &kg); err != nil {
					t.Fatal(err)
				}
				id, key = kg.Community, kg.PrivateKey
			case args[0] == "sample":
				sampleFile = filepath.Join(dir, redirect)
			case bi == 0 && args[0] == "community" && args[1] == "list":
				cid, _ := archive.ParseCommunityID(id)
				row := ""
				for _, l := range strings.Split(stdout, "\n") {
					if strings.HasPrefix(l, shortID(cid)) {
						row = l
					}
				}
				cols := strings.Fields(row)
				if len(cols) < 6 || cols[2] == "0" || cols[3]+" "+cols[4] < time.Unix(triggered, 0).UTC().Format(time.DateTime) {
					t.Fatalf("community list does not show the trigger's build:\n%s", stdout)
				}
			case args[0] == "extract":
				got, want := hashes(t, stdout), hashes(t, mustReadFile(t, sampleFile))
				if !slices.Equal(got, want) {
					t.Fatalf("extracted %d messages, want exactly the %d sampled", len(got), len(want))
				}
			}
		}
	}
	if id == "" || sampleFile == "" || triggered == 0 || !fetched {
		t.Fatal("README walkthrough lacks keygen, sample, trigger or aria2c")
	}
}

// fetchAnnounced runs README's aria2c line: the flags it gives (DHT and
// local discovery off, no seeding), the magnet the fleet announced for the
// current build, and checks that every file aria2c wrote equals the
// seeder's copy (so the fleet tracker, first in the magnet, found the seeder).
func fetchAnnounced(t *testing.T, states *state.Store, f []string, id, seeded string) {
	t.Helper()
	for _, want := range []string{"--enable-dht=false", "--bt-enable-lpd=false", "--seed-time=0"} {
		if !slices.Contains(f, want) {
			t.Fatalf("README's aria2c line lacks %s", want)
		}
	}
	if last := f[len(f)-1]; last != "'magnet:?xt=…'" {
		t.Fatalf("README's aria2c line ends with %q, want the placeholder 'magnet:?xt=…'", last)
	}
	var magnet string
	testenv.Eventually(t, 60*time.Second, func() bool {
		bs, _, err1 := states.GetBuild(context.Background(), id)
		an, _, err2 := states.GetAnnounce(context.Background(), id)
		magnet = an.Magnet
		return err1 == nil && err2 == nil && an.Sent && bs.InfoHash != "" && an.InfoHash == bs.InfoHash
	}, "the current build's announcement")
	if u, err := url.Parse(magnet); err != nil || len(u.Query()["tr"]) < 2 || !strings.HasPrefix(u.Query()["tr"][0], "http://127.0.0.1:") {
		t.Fatalf("announced magnet %s does not name the fleet tracker on loopback first (then status-go's): %v", magnet, err)
	}
	out := t.TempDir()
	testenv.Aria2cDownload(t, magnet, out, false, 2*time.Minute)
	n := 0
	err := filepath.WalkDir(out, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(out, p)
		rel = strings.TrimPrefix(rel, id+string(filepath.Separator))
		got, want := mustReadFile(t, p), mustReadFile(t, filepath.Join(seeded, rel))
		if got != want {
			t.Fatalf("aria2c's %s (%d bytes) differs from the seeder's (%d bytes)", rel, len(got), len(want))
		}
		n++
		return nil
	})
	if err != nil || n == 0 {
		t.Fatalf("aria2c wrote %d files: %v", n, err)
	}
}

// startAllInOne runs the all-in-one fleet (no demo, a 200 ms tick, the
// given settle, the fleet tracker when tracker is set) on free ports under
// a temp dir until the test ends, and points archivectl at its NATS
// (ARCHIVEFLEET_NATS_URL). Its config and NATS URL are returned; the fleet
// may still be starting.
func startAllInOne(t *testing.T, settle time.Duration, tracker bool) (fleet.AllInOneConfig, string) {
	t.Helper()
	natsPort := testenv.FreePort(t)
	cfg := fleet.DefaultAllInOneConfig()
	cfg.DataDir, cfg.NATSPort, cfg.HTTPAddr = filepath.Join(t.TempDir(), "fleet"), natsPort, fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	if tracker {
		cfg.TrackerListen = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	}
	cfg.Demo, cfg.Settle, cfg.LogLevel, cfg.Tick = false, settle, "warn", 200*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fleet.RunAllInOne(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("fleet: %v", err)
		}
	})
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	t.Setenv("ARCHIVEFLEET_NATS_URL", natsURL)
	// The README's lines post to the HTTP listener: wait until it answers
	// (NATS comes up first, the listener after the services started).
	testenv.Eventually(t, 60*time.Second, func() bool {
		resp, err := http.Get("http://" + cfg.HTTPAddr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "the fleet's HTTP listener")
	return cfg, natsURL
}
