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
