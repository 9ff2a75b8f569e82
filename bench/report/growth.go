package main

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// growthSection renders how costs grow (issue #19): build time against a
// window's size (bench/window) and the backfill rate against the number of
// communities, interleaved with a reference commit (bench/fleetcurve).
func growthSection(dir string) string {
	var sb strings.Builder
	sb.WriteString("\n## How costs grow\n\n")
	for _, part := range []func(string) (string, error){windowPart, fleetCurvePart} {
		s, err := part(dir)
		if err != nil {
			fmt.Fprintf(&sb, "(%v)\n\n", err)
			continue
		}
		sb.WriteString(s)
	}
	return sb.String()
}

// windowRun is one bench/window case.
type windowRun struct {
	Mode      string  `json:"mode"`
	Messages  int     `json:"messages"`
	Payload   int     `json:"payload_bytes"`
	IngestS   float64 `json:"ingest_s"`
	CommitS   float64 `json:"commit_s"`
	AnnounceS float64 `json:"announce_s"`
	PeakMB    float64 `json:"archiver_peak_rss_MB"`
	DataMB    float64 `json:"data_MB"`
}

func windowPart(dir string) (string, error) {
	var runs []windowRun
	if err := readInto(filepath.Join(dir, "window.json"), &runs); err != nil {
		return "", fmt.Errorf("window sizes: %w", err)
	}
	var sb strings.Builder
	sb.WriteString("### Build time against window size (`bench/window`)\n\n")
	sb.WriteString("One community, one closed window of N messages stored before the community is enabled; the clock runs from the moment the window may be built to its commit, and to its magnet link's announcement (seeded first). `services`: scheduler, archiver, seeder and announcer as processes, NATS embedded in the benchmark; `allinone`: `cmd/fleet` with its embedded NATS (its peak memory includes the server's). Growth: this commit time over the commit time of the size ten times smaller, same mode and payload (linear is 10x).\n\n")
	sb.WriteString("| mode | payload | messages | data | ingest | commit | announced | growth | peak resident memory |\n|---|---|---|---|---|---|---|---|---|\n")
	commit := map[string]float64{}
	for _, r := range runs {
		commit[fmt.Sprintf("%s/%d/%d", r.Mode, r.Payload, r.Messages)] = r.CommitS
	}
	for _, r := range runs {
		growth := "-"
		if prev, ok := commit[fmt.Sprintf("%s/%d/%d", r.Mode, r.Payload, r.Messages/10)]; ok && prev > 0 {
			growth = fmt.Sprintf("%.1fx", r.CommitS/prev)
		}
		fmt.Fprintf(&sb, "| %s | %d B | %d | %.0f MB | %.1f s | **%.1f s** | %.1f s | %s | %.0f MB |\n",
			r.Mode, r.Payload, r.Messages, r.DataMB, r.IngestS, r.CommitS, r.AnnounceS, growth, r.PeakMB)
	}
	sb.WriteString("\n")
	return sb.String(), nil
}

// curveRun is one bench/fleet result from bench/fleetcurve.
type curveRun struct {
	Version         string             `json:"version"`
	Round           int                `json:"round"`
	Load            int                `json:"load"`
	Communities     int                `json:"communities"`
	Seconds         float64            `json:"seconds"`
	CommunitiesPerS float64            `json:"communities_per_s"`
	CPUMs           map[string]float64 `json:"cpu_ms_per_community"`
	PeakRSS         map[string]float64 `json:"peak_rss_MB"`
}

func fleetCurvePart(dir string) (string, error) {
	var c struct {
		Reference string     `json:"reference"`
		Runs      []curveRun `json:"runs"`
	}
	if err := readInto(filepath.Join(dir, "fleetcurve.json"), &c); err != nil {
		return "", fmt.Errorf("fleet curve: %w", err)
	}
	type key struct{ n, load int }
	type pair struct{ head, ref []curveRun }
	groups := map[key]*pair{}
	for _, r := range c.Runs {
		k := key{r.Communities, r.Load}
		if groups[k] == nil {
			groups[k] = &pair{}
		}
		if r.Version == "head" {
			groups[k].head = append(groups[k].head, r)
		} else {
			groups[k].ref = append(groups[k].ref, r)
		}
	}
	keys := slices.SortedFunc(maps.Keys(groups), func(a, b key) int {
		if a.load != b.load {
			return a.load - b.load
		}
		return a.n - b.n
	})
	var sb strings.Builder
	fmt.Fprintf(&sb, "### Fleet backfill against the number of communities (`bench/fleetcurve`)\n\n")
	fmt.Fprintf(&sb, "`bench/fleet` (small communities of 10 messages, 2 archiver processes, one seeder, one announcer, NATS embedded in the benchmark, end to end from due events to every magnet link announced) at each size, each round also at commit %s in the same time span, the order alternating between rounds. Ratio: this commit's rate over %s's in the same round (above 1x is faster). min / median / max over the rounds.\n\n", c.Reference, c.Reference)
	fmt.Fprintf(&sb, "| communities | load | rounds | seconds | communities/s | %s seconds | %s communities/s | ratio |\n|---|---|---|---|---|---|---|---|\n", c.Reference, c.Reference)
	median := map[key][2]float64{}
	for _, k := range keys {
		g := groups[k]
		hs, rs := field(g.head, func(r curveRun) float64 { return r.Seconds }), field(g.ref, func(r curveRun) float64 { return r.Seconds })
		hr, rr := field(g.head, func(r curveRun) float64 { return r.CommunitiesPerS }), field(g.ref, func(r curveRun) float64 { return r.CommunitiesPerS })
		var ratios []float64
		for _, h := range g.head {
			for _, r := range g.ref {
				if r.Round == h.Round {
					ratios = append(ratios, h.CommunitiesPerS/r.CommunitiesPerS)
				}
			}
		}
		load := "quiet"
		if k.load > 0 {
			load = fmt.Sprintf("%d burners", k.load)
		}
		fmt.Fprintf(&sb, "| %d | %s | %d | %s | **%s** | %s | %s | **%s** |\n", k.n, load, len(g.head),
			mmm(hs, "%.0f"), mmm(hr, "%.1f"), mmm(rs, "%.0f"), mmm(rr, "%.1f"), mmm(ratios, "%.2fx"))
		median[k] = [2]float64{med(hs), med(rs)}
	}
	sb.WriteString("\n")
	for _, k := range keys {
		if h, ok := median[key{k.n * 2, k.load}]; ok && median[k][0] > 0 {
			fmt.Fprintf(&sb, "- %d → %d communities (%s): the backfill takes **%.2fx** the time (linear is 2x); %s: %.2fx.\n",
				k.n, k.n*2, loadName(k.load), h[0]/median[k][0], c.Reference, h[1]/median[k][1])
		}
	}
	// CPU per community per process at the largest quiet size.
	var big *pair
	bigN := 0
	for _, k := range keys {
		if k.load == 0 && k.n > bigN {
			big, bigN = groups[k], k.n
		}
	}
	if big != nil && len(big.head) > 0 {
		fmt.Fprintf(&sb, "\nCPU per community and peak resident memory by process, this commit, %d communities (median over the rounds):\n\n| process | CPU ms per community | peak resident memory |\n|---|---|---|\n", bigN)
		names := slices.Sorted(maps.Keys(big.head[0].CPUMs))
		total := 0.0
		for _, n := range names {
			cpu := med(field(big.head, func(r curveRun) float64 { return r.CPUMs[n] }))
			total += cpu
			fmt.Fprintf(&sb, "| %s | %.1f | %.0f MB |\n", n, cpu, med(field(big.head, func(r curveRun) float64 { return r.PeakRSS[n] })))
		}
		fmt.Fprintf(&sb, "| **all** | **%.1f** | |\n", total)
		rate := med(field(big.head, func(r curveRun) float64 { return r.CommunitiesPerS }))
		fmt.Fprintf(&sb, "\nGoal: %d communities/s. At %.1f ms of CPU per community, %d cores allow at most %.0f/s however the work is spread; measured %.1f/s (%.0f%% of that ceiling). "+
			"Reaching the goal needs the CPU per community below %.1f ms, or more cores: the services scale out (more archivers, seeders, a NATS cluster), this table is one machine.\n",
			goalRate, total, benchCores, benchCores*1000/total, rate, 100*rate/(benchCores*1000/total), benchCores*1000/float64(goalRate))
	}
	sb.WriteString("\n")
	return sb.String(), nil
}

// goalRate is the backfill rate the fleet aims at on the benchmark machine, and
// benchCores that machine's cores.
const (
	goalRate   = 300
	benchCores = 2
)

func loadName(n int) string {
	if n == 0 {
		return "quiet"
	}
	return fmt.Sprintf("%d burners", n)
}

func field(rs []curveRun, f func(curveRun) float64) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}

func med(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(vs))
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

// mmm is "min / median / max" of vs, or the one value.
func mmm(vs []float64, f string) string {
	if len(vs) == 0 {
		return "-"
	}
	if len(vs) == 1 {
		return fmt.Sprintf(f, vs[0])
	}
	return fmt.Sprintf(f, slices.Min(vs)) + " / " + fmt.Sprintf(f, med(vs)) + " / " + fmt.Sprintf(f, slices.Max(vs))
}

// replaceGrowth swaps the growth section of the markdown file md for
// section: the "## How costs grow" section if there is one, else the older
// single-point "## Fleet throughput" section. Either runs to the next
// second-level heading.
func replaceGrowth(md, section string) error {
	b, err := os.ReadFile(md)
	if err != nil {
		return err
	}
	text := string(b)
	start := -1
	for _, h := range []string{"\n## How costs grow\n", "\n## Fleet throughput\n"} {
		if i := strings.Index(text, h); i >= 0 {
			start = i
			break
		}
	}
	if start < 0 {
		return fmt.Errorf("%s: no growth or fleet-throughput section to replace", md)
	}
	end := len(text)
	if i := strings.Index(text[start+1:], "\n## "); i >= 0 {
		end = start + 1 + i
	}
	section = strings.TrimRight(section, "\n") + "\n"
	return os.WriteFile(md, []byte(text[:start]+section+text[end:]), 0o644)
}
