// Command placement measures what placement saves each seeder: N small
// communities are built once, then K seeder processes (for each K given)
// seed them with SEED_REPLICAS=2 until every community is served by
// min(K, 2) of them; each seeder's torrents, bytes on disk and resident
// memory are then read. Reference: K = 1, where one seeder holds
// everything, as every seeder did before placement.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/archivefleet/archivefleet/bench/benchfleet"
	"github.com/archivefleet/archivefleet/bench/proc"
	"github.com/archivefleet/archivefleet/internal/placement"
	"github.com/archivefleet/archivefleet/internal/scheduler"
	"github.com/archivefleet/archivefleet/internal/state"
)

func main() {
	n := flag.Int("communities", 2000, "communities")
	counts := flag.String("seeders", "1,2,4", "seeder counts to measure, comma-separated")
	flag.Parse()
	dir, err := os.MkdirTemp("", "placementbench-")
	check(err)
	defer os.RemoveAll(dir)
	e, err := benchfleet.Start(dir, "archiver", "seeder")
	check(err)
	defer e.Close()
	ctx := context.Background()
	b := e.Bus
	coms, err := e.SmallCommunities(ctx, *n)
	check(err)

	env := append(e.ServiceEnv(), "ARCHIVEFLEET_MESSAGE_PRUNE_GRACE=0")
	start := func(name, logName string, extra ...string) *exec.Cmd {
		cmd := proc.Command(e.Bin(name))
		cmd.Env = append(append([]string{}, env...), extra...)
		logf, _ := os.Create(filepath.Join(dir, logName+".log"))
		cmd.Stdout, cmd.Stderr = logf, logf
		check(cmd.Start())
		return cmd
	}
	stop := func(cmds []*exec.Cmd) {
		for _, p := range cmds {
			p.Process.Signal(os.Interrupt)
		}
		for _, p := range cmds {
			p.Wait()
		}
	}
	var archivers []*exec.Cmd
	for i := range 2 {
		archivers = append(archivers, start("archiver", fmt.Sprint("archiver-", i), "ARCHIVEFLEET_HTTP_ADDR=127.0.0.1:0",
			"ARCHIVEFLEET_WORK_DIR="+filepath.Join(dir, fmt.Sprint("a", i)), "ARCHIVEFLEET_SLOTS=2"))
	}
	t0 := time.Now()
	outcomes, err := scheduler.Backfill(ctx, b, coms, time.Now(), 0)
	check(err)
	log.Printf("published %d due events", len(scheduler.Published(outcomes)))
	sst := &state.Store{KV: b.State}
	ih := map[string]string{}
	for _, com := range coms {
		for {
			bs, _, err := sst.GetBuild(ctx, com.ID.String())
			check(err)
			if bs.InfoHash != "" {
				ih[com.ID.String()] = bs.InfoHash
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	stop(archivers)
	log.Printf("built %d communities in %v", *n, time.Since(t0))

	membersKV, servingKV, err := b.SeederBuckets(ctx)
	check(err)
	serving := placement.Serving{KV: servingKV}
	var results []map[string]any
	for _, ks := range strings.Split(*counts, ",") {
		k, err := strconv.Atoi(strings.TrimSpace(ks))
		check(err)
		type seeder struct {
			id, dir string
			http    int
			cmd     *exec.Cmd
		}
		var seeders []*seeder
		for i := range k {
			s := &seeder{id: fmt.Sprintf("k%d-s%d", k, i+1), http: proc.MustFreePort()}
			s.dir = filepath.Join(dir, s.id)
			s.cmd = start("seeder", s.id, "ARCHIVEFLEET_SEEDER_ID="+s.id, "ARCHIVEFLEET_SEED_DIR="+s.dir,
				fmt.Sprintf("ARCHIVEFLEET_BT_LISTEN=127.0.0.1:%d", proc.MustFreePort()), "ARCHIVEFLEET_BT_DHT=false",
				"ARCHIVEFLEET_BT_TRACKERS=false", "ARCHIVEFLEET_SEED_REPLICAS=2", fmt.Sprintf("ARCHIVEFLEET_HTTP_ADDR=127.0.0.1:%d", s.http))
			seeders = append(seeders, s)
		}
		want := min(k, 2)
		t1 := time.Now()
		for {
			ms, err := placement.ReadMembers(ctx, membersKV)
			check(err)
			ours := slices.DeleteFunc(ms, func(m placement.Member) bool { return !strings.HasPrefix(m.ID, fmt.Sprintf("k%d-", k)) })
			short := 0
			if len(ours) == k {
				for c, h := range ih {
					got, err := serving.Seeders(ctx, c, ours)
					check(err)
					n := 0
					for _, v := range got {
						if v == h {
							n++
						}
					}
					if n != want {
						short++
					}
				}
			} else {
				short = len(ih)
			}
			if short == 0 {
				break
			}
			if time.Since(t1) > 20*time.Minute {
				log.Fatalf("%d seeders: %d communities not on %d after 20 minutes", k, short, want)
			}
			time.Sleep(2 * time.Second)
		}
		steady := time.Since(t1)
		row := map[string]any{"seeders": k, "replicas": 2, "communities": *n, "steady_seconds": steady.Seconds()}
		var per []map[string]any
		for _, s := range seeders {
			per = append(per, map[string]any{"id": s.id, "torrents": metric(s.http, "archivefleet_torrents_seeding"),
				"disk_MB": float64(du(s.dir)) / 1e6, "rss_MB": float64(proc.StatusKB(s.cmd.Process.Pid, "VmRSS")) / 1024,
				"peak_rss_MB": float64(proc.StatusKB(s.cmd.Process.Pid, "VmHWM")) / 1024})
		}
		row["per_seeder"] = per
		log.Printf("%d seeders: steady after %v: %v", k, steady.Round(time.Second), per)
		results = append(results, row)
		cmds := make([]*exec.Cmd, len(seeders))
		for i, s := range seeders {
			cmds[i] = s.cmd
		}
		stop(cmds)
		// A stopped seeder stays a member until its entry expires (a
		// restart keeps its place): wait, so the next run starts clean.
		for {
			ms, err := placement.ReadMembers(ctx, membersKV)
			check(err)
			if len(ms) == 0 {
				break
			}
			time.Sleep(time.Second)
		}
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{"communities": *n, "runs": results})
}

// metric reads one unlabelled gauge from a service's /metrics.
func metric(port int, name string) float64 {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == name {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	return -1
}

// du is the size of the files under dir.
func du(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
