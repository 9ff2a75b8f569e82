package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestScaleSection renders the scale-out section from small result files
// and names the ones missing instead of failing.
func TestScaleSection(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("placement.json", `{"communities":2000,"runs":[{"seeders":1,"replicas":2,"steady_seconds":17,"per_seeder":[{"torrents":2000,"disk_MB":205,"rss_MB":92}]},
		{"seeders":4,"replicas":2,"steady_seconds":32,"per_seeder":[{"torrents":1009,"disk_MB":103,"rss_MB":68},{"torrents":989,"disk_MB":101,"rss_MB":66}]}]}`)
	write("messages.json", `{"communities":10,"days":10,"perDay":500,"figures":[{"day":3,"raw":{"msgs":15000,"bytes":9.4e6},"bounded":{"msgs":15000,"bytes":9.4e6},"open":15000},
		{"day":10,"raw":{"msgs":50010,"bytes":31.6e6},"bounded":{"msgs":13960,"bytes":8.8e6},"open":13950}]}`)
	write("objects.txt", "    compact_test.go:276: FIGURES compact objects: 6 messages of 485 payload+sig bytes (543 archive bytes each) in one week: archive object 102400 bytes padded (stream +102818), 3260 compact (stream +3677): 28x smaller\n")
	write("cluster.json", `{"communities":200,"windows":4,"single":{"communities_per_s":{"Min":30.9,"Median":32.5,"Max":41.3},"median_community_s":{"Median":3.12},
		"slowest_community_s":{"Median":6.14},"events":{"retry":{"Max":0},"dead":{"Max":0}},"rounds":[{},{},{}]},
		"cluster":{"communities_per_s":{"Min":26.2,"Median":26.9,"Max":29.9},"median_community_s":{"Median":3.76},"slowest_community_s":{"Median":7.41},
		"events":{"retry":{"Max":0},"dead":{"Max":0}},"rounds":[{},{},{}]}}`)
	got := scaleSection(dir)
	for _, want := range []string{"| 1 | 2000 | 205 MB | 92 MB | 17 s |", "| 4 | 989–1009 | 101–103 MB | 66–68 MB | 32 s |",
		"| 10 | 13950 | 50010 / 31.6 / 0 | 13960 / 8.8 / 0 | 0.28 |", "**28x smaller**", "| 200 × 4 hourly windows, 3 rounds | 3-node cluster | 26.2 / 26.9 / 29.9 | 3.76 | 7.41 | 2.0x | 0 | 0 |"} {
		if !strings.Contains(got, want) {
			t.Errorf("section lacks %q:\n%s", want, got)
		}
	}
}

// TestGrowthSection renders the window-size and fleet-curve tables: growth
// against the size ten times smaller, ratios of the same round, and the
// time ratio of each doubling.
func TestGrowthSection(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("window.json", `[{"mode":"services","messages":100000,"payload_bytes":300,"ingest_s":0.7,"commit_s":1.4,"announce_s":2,"archiver_peak_rss_MB":60,"data_MB":40},
		{"mode":"services","messages":1000000,"payload_bytes":300,"ingest_s":6.6,"commit_s":11.2,"announce_s":15.5,"archiver_peak_rss_MB":105,"data_MB":400}]`)
	write("fleetcurve.json", `{"reference":"abc1234","runs":[
		{"version":"head","round":1,"communities":5000,"seconds":100,"communities_per_s":50,"cpu_ms_per_community":{"seeder":6},"peak_rss_MB":{"seeder":90}},
		{"version":"abc1234","round":1,"communities":5000,"seconds":125,"communities_per_s":40},
		{"version":"head","round":1,"communities":10000,"seconds":210,"communities_per_s":47.6,"cpu_ms_per_community":{"seeder":7},"peak_rss_MB":{"seeder":120}},
		{"version":"abc1234","round":1,"communities":10000,"seconds":400,"communities_per_s":25}]}`)
	got := growthSection(dir)
	for _, want := range []string{"| services | 300 B | 1000000 | 400 MB | 6.6 s | **11.2 s** | 15.5 s | 8.0x | 105 MB |",
		"| 5000 | quiet | 1 | 100 | **50.0** | 125 | 40.0 | **1.25x** |", "| 10000 | quiet | 1 | 210 | **47.6** | 400 | 25.0 | **1.90x** |",
		"5000 → 10000 communities (quiet): the backfill takes **2.10x** the time (linear is 2x); abc1234: 3.20x.", "| seeder | 7.0 | 120 MB |"} {
		if !strings.Contains(got, want) {
			t.Errorf("section lacks %q:\n%s", want, got)
		}
	}
}

// TestReplaceGrowth: the growth section replaces the older single-point
// fleet section, or an earlier growth section, and nothing else.
func TestReplaceGrowth(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"old fleet section", "# B\n\n## A\na\n\n## Fleet throughput\nold\n\n## Waku\nw\n", "# B\n\n## A\na\n\n## How costs grow\nnew\n\n## Waku\nw\n"},
		{"earlier growth section, last", "# B\n\n## How costs grow\nold\n", "# B\n\n## How costs grow\nnew\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "B.md")
			os.WriteFile(p, []byte(tc.in), 0o644)
			if err := replaceGrowth(p, "\n## How costs grow\nnew\n\n"); err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(p)
			if string(got) != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
	p := filepath.Join(t.TempDir(), "B.md")
	os.WriteFile(p, []byte("# B\n"), 0o644)
	if err := replaceGrowth(p, "x"); err == nil {
		t.Fatal("no section to replace: no error")
	}
}
