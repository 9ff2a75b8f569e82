// Command fleetcurve runs bench/fleet at several sizes, each round against
// the same benchmark at a reference commit in the same time span (the
// order alternating between rounds), so that a cost growing with the
// number of communities shows as a curve and a regression as a ratio
// below 1. The reference is checked out in a temporary git worktree.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/archivefleet/archivefleet/bench/proc"
)

// run is one bench/fleet result.
type run struct {
	Version          string             `json:"version"`
	Round            int                `json:"round"`
	Load             int                `json:"load"` // CPU burners running
	Communities      int                `json:"communities"`
	Seconds          float64            `json:"seconds"`
	CommunitiesPerS  float64            `json:"communities_per_s"`
	CPUMsByProcess   map[string]float64 `json:"cpu_ms_per_community,omitempty"`
	PeakRSSByProcess map[string]float64 `json:"peak_rss_MB,omitempty"`
}

func main() {
	ref := flag.String("ref", "482f5d0", "reference commit")
	sizes := flag.String("sizes", "2000,5000,10000", "community counts, comma-separated")
	rounds := flag.Int("rounds", 2, "rounds per size")
	loaded := flag.String("loaded", "", "sizes to run again with -load CPU burners, comma-separated")
	load := flag.Int("load", 2, "CPU burners for the -loaded sizes")
	proc.BurnIfAsked()
	flag.Parse()

	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	check(err)
	head := strings.TrimSpace(string(top))
	tmp, err := os.MkdirTemp("", "fleetcurve-")
	check(err)
	defer os.RemoveAll(tmp)
	refDir := filepath.Join(tmp, "ref")
	add := exec.Command("git", "worktree", "add", "--detach", refDir, *ref)
	add.Stderr = os.Stderr
	if err := add.Run(); err != nil {
		log.Fatalf("reference %s: git worktree add: %v (a shallow clone lacks it: git fetch --unshallow)", *ref, err)
	}
	defer exec.Command("git", "worktree", "remove", "--force", refDir).Run()

	var runs []run
	measure := func(sizes string, burners int) {
		for _, s := range strings.Split(sizes, ",") {
			if strings.TrimSpace(s) == "" {
				continue
			}
			n, err := strconv.Atoi(strings.TrimSpace(s))
			check(err)
			for r := 1; r <= *rounds; r++ {
				order := []string{"head", "ref"}
				if r%2 == 0 {
					order = []string{"ref", "head"}
				}
				for _, v := range order {
					dir := head
					if v == "ref" {
						dir = refDir
					}
					stop := func() {}
					if burners > 0 {
						stop, err = proc.StartBurners(burners)
						check(err)
					}
					res := fleet(dir, n)
					stop()
					res.Version, res.Round, res.Load = v, r, burners
					if v == "ref" {
						res.Version = *ref
					}
					log.Printf("%s n=%d load=%d round %d: %.1f s, %.1f communities/s", res.Version, n, burners, r, res.Seconds, res.CommunitiesPerS)
					runs = append(runs, res)
				}
			}
		}
	}
	measure(*sizes, 0)
	measure(*loaded, *load)
	enc := json.NewEncoder(os.Stdout)
	check(enc.Encode(map[string]any{"reference": *ref, "runs": runs}))
}

// fleet runs bench/fleet in dir and returns its result line.
func fleet(dir string, n int) run {
	cmd := exec.Command("go", "run", "./bench/fleet", "-communities", strconv.Itoa(n))
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		log.Fatalf("bench/fleet in %s, %d communities: %v", dir, n, err)
	}
	var last string
	sc := bufio.NewScanner(&out)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); strings.HasPrefix(l, "{") {
			last = l
		}
	}
	var res run
	if err := json.Unmarshal([]byte(last), &res); err != nil || res.Seconds == 0 {
		log.Fatalf("bench/fleet in %s: no result in %q", dir, last)
	}
	return res
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
