package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// scaleSection renders the scale-out figures (issue #13): placement,
// the bounded message store, compact objects and the cluster backfill.
// Each part needs its result file; a missing one is named, not fatal, so
// bench/run can be re-run a part at a time.
func scaleSection(dir string) string {
	var sb strings.Builder
	sb.WriteString("\n## Scaling out: placement, bounded message store, compact objects, cluster\n\n")
	for _, part := range []func(string) (string, error){placementPart, messagesPart, objectsPart, clusterPart} {
		s, err := part(dir)
		if err != nil {
			fmt.Fprintf(&sb, "(%v)\n\n", err)
			continue
		}
		sb.WriteString(s)
	}
	return sb.String()
}

func readInto(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("not measured: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		log.Fatalf("%s: %v", path, err)
	}
	return nil
}

func placementPart(dir string) (string, error) {
	var r struct {
		Communities int `json:"communities"`
		Runs        []struct {
			Seeders   int     `json:"seeders"`
			Replicas  int     `json:"replicas"`
			Steady    float64 `json:"steady_seconds"`
			PerSeeder []struct {
				Torrents float64 `json:"torrents"`
				Disk     float64 `json:"disk_MB"`
				RSS      float64 `json:"rss_MB"`
			} `json:"per_seeder"`
		} `json:"runs"`
	}
	if err := readInto(filepath.Join(dir, "placement.json"), &r); err != nil {
		return "", err
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "### Per-seeder load with SEED_REPLICAS=2 (`bench/placement`)\n\n%d small communities (one archive each) built once, then 1, 2 and 4 seeder processes started fresh; figures once every community is served by min(seeders, 2) of them. One seeder (the reference) holds everything, as every seeder did before placement.\n\n| seeders | torrents per seeder | disk per seeder | resident memory per seeder | until placed |\n|---|---|---|---|---|\n", r.Communities)
	for _, run := range r.Runs {
		var t, d, m []float64
		for _, p := range run.PerSeeder {
			t, d, m = append(t, p.Torrents), append(d, p.Disk), append(m, p.RSS)
		}
		fmt.Fprintf(&sb, "| %d | %s | %s MB | %s MB | %.0f s |\n", run.Seeders, span(t, "%.0f"), span(d, "%.0f"), span(m, "%.0f"), run.Steady)
	}
	sb.WriteString("\nWith R = 2 a seeder holds 2/N of the communities (every seeder holds them all at N ≤ 2); memory is a fixed ~45 MB plus about 22 KB per torrent.\n\n")
	return sb.String(), nil
}

// span renders "lo–hi" (or one value) of vs.
func span(vs []float64, f string) string {
	if len(vs) == 0 {
		return "-"
	}
	lo, hi := slices.Min(vs), slices.Max(vs)
	if fmt.Sprintf(f, lo) == fmt.Sprintf(f, hi) {
		return fmt.Sprintf(f, lo)
	}
	return fmt.Sprintf(f, lo) + "–" + fmt.Sprintf(f, hi)
}

func messagesPart(dir string) (string, error) {
	type size struct {
		Msgs     float64 `json:"msgs"`
		Bytes    float64 `json:"bytes"`
		Subjects float64 `json:"subjects"`
		Disk     float64 `json:"disk"`
	}
	var r struct {
		Communities int `json:"communities"`
		Days        int `json:"days"`
		PerDay      int `json:"perDay"`
		Figures     []struct {
			Day     int   `json:"day"`
			Raw     size  `json:"raw"`
			Bounded size  `json:"bounded"`
			Open    int64 `json:"open"`
		} `json:"figures"`
	}
	if err := readInto(filepath.Join(dir, "messages.json"), &r); err != nil {
		return "", err
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "### MESSAGES stream size over time, raw vs bounded (`BenchmarkMessageStoreSize`)\n\n%d communities, %d messages per community per day for %d simulated days, weekly windows built 2 minutes after they close, `MESSAGE_PRUNE_GRACE` 48 h; both stores given the same messages and builds, read with stream info.\n\n| day | open-window messages | raw: messages / MB / subjects | bounded: messages / MB / subjects | bounded ÷ raw (bytes) |\n|---|---|---|---|---|\n", r.Communities, r.PerDay, r.Days)
	for _, f := range r.Figures {
		if f.Day%7 != 3 && f.Day != r.Days {
			continue // mid-week (right after a prune) and the last day
		}
		fmt.Fprintf(&sb, "| %d | %d | %.0f / %.1f / %.0f | %.0f / %.1f / %.0f | %.2f |\n", f.Day, f.Open, f.Raw.Msgs, f.Raw.Bytes/1e6, f.Raw.Subjects,
			f.Bounded.Msgs, f.Bounded.Bytes/1e6, f.Bounded.Subjects, f.Bounded.Bytes/f.Raw.Bytes)
	}
	var lo, hi float64 = -1, 0
	for _, f := range r.Figures {
		if f.Day > 9 {
			if lo < 0 || f.Bounded.Bytes < lo {
				lo = f.Bounded.Bytes
			}
			hi = max(hi, f.Bounded.Bytes)
		}
	}
	last := r.Figures[len(r.Figures)-1]
	fmt.Fprintf(&sb, "\nFrom day 10 on the bounded stream stays between %.1f and %.1f MB (the open window plus up to a grace of closed ones) while the raw one grows by %.2f MB a day to %.1f MB.\n\n",
		lo/1e6, hi/1e6, last.Raw.Bytes/float64(r.Days)/1e6, last.Raw.Bytes/1e6)
	return sb.String(), nil
}

var objectFigures = regexp.MustCompile(`FIGURES compact objects: (\d+) messages of (\d+) payload\+sig bytes \((\d+) archive bytes each\) in one week: archive object (\d+) bytes padded \(stream \+(\d+)\), (\d+) compact \(stream \+(\d+)\)`)

func objectsPart(dir string) (string, error) {
	f, err := os.Open(filepath.Join(dir, "objects.txt"))
	if err != nil {
		return "", fmt.Errorf("not measured: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := objectFigures.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		var n [7]float64
		for i := range n {
			fmt.Sscan(m[i+1], &n[i])
		}
		return fmt.Sprintf("### Object-store bytes per small archive (`TestObjectBytesPerSmallArchive`)\n\nA week of %.0f messages (%.0f archive bytes each): the archive object was %.0f bytes with its zero padding (the stream grew %.0f bytes) and is %.0f bytes without (the stream grows %.0f bytes): **%.0fx smaller**. Readers pad it back from the index entry and verify it against the piece hashes as before.\n\n",
			n[0], n[2], n[3], n[4], n[5], n[6], n[4]/n[6]), nil
	}
	return "", fmt.Errorf("objects.txt has no FIGURES line")
}

// clusterRuns are bench/cluster's result files bench/run writes, with
// what each measures.
var clusterRuns = []struct{ file, what string }{
	{"cluster.json", "hourly windows"},
	{"cluster-days.json", "daily windows (a build reads one UTC day per window: the case that had the 12-minute tail)"},
	{"cluster-leader.json", "hourly windows, the ARCHIVE_DUE leader shut down a third of the way in and restarted 3 s later"},
}

func clusterPart(dir string) (string, error) {
	type spread struct{ Min, Median, Max float64 }
	type side struct {
		Rate    spread            `json:"communities_per_s"`
		Median  spread            `json:"median_community_s"`
		Slowest spread            `json:"slowest_community_s"`
		Events  map[string]spread `json:"events"`
		Rounds  []json.RawMessage `json:"rounds"`
	}
	var sb strings.Builder
	found := 0
	for _, run := range clusterRuns {
		var r struct {
			Communities int     `json:"communities"`
			Windows     int     `json:"windows"`
			Single      *side   `json:"single"`
			Cluster     *side   `json:"cluster"`
			Ratio       float64 `json:"cluster_over_single_communities_per_s"`
		}
		if err := readInto(filepath.Join(dir, run.file), &r); err != nil {
			continue
		}
		if found == 0 {
			sb.WriteString("### Backfill on a 3-node JetStream cluster (R3) vs one server (`bench/cluster`)\n\nThree embedded nats-server nodes clustered over 127.0.0.1, streams, KV and object store at 3 replicas; two archiver processes given all three URLs; the single server in the same run, the order alternating per round. Times are from the due events' publication to each community's commit; failures are events that counted toward MAX_DELIVER.\n\n| run | setup | communities/s (min / median / max) | median community s | slowest community s | slowest ÷ median | failures counted | dead-lettered |\n|---|---|---|---|---|---|---|---|\n")
		}
		found++
		for _, x := range []struct {
			name string
			s    *side
		}{{"one server", r.Single}, {"3-node cluster", r.Cluster}} {
			if x.s == nil {
				continue
			}
			fmt.Fprintf(&sb, "| %d × %d %s, %d rounds | %s | %.1f / %.1f / %.1f | %.2f | %.2f | %.1fx | %.0f | %.0f |\n", r.Communities, r.Windows, run.what, len(x.s.Rounds), x.name,
				x.s.Rate.Min, x.s.Rate.Median, x.s.Rate.Max, x.s.Median.Median, x.s.Slowest.Median, x.s.Slowest.Median/x.s.Median.Median,
				x.s.Events["retry"].Max, x.s.Events["dead"].Max)
		}
	}
	if found == 0 {
		return "", fmt.Errorf("cluster backfill not measured: no %s", clusterRuns[0].file)
	}
	sb.WriteString("\nBefore the fix (transient errors counted as failures with an exponential back-off) the daily-window run took 618 s for its slowest community against a median of 51 s, with 317 failures counted.\n\n")
	return sb.String(), nil
}
