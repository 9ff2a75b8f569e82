// Command fleet measures a backfill end to end: N small communities are
// registered and given messages, due events are published for all of them
// at once, and the clock runs until every community's magnet link has been
// announced. The services run as separate processes (archivers, a seeder,
// an announcer) against NATS (embedded here) and a redis-server child; the
// result is communities per second and each process's peak resident memory.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"time"

	"github.com/archivefleet/archivefleet/bench/benchfleet"
	"github.com/archivefleet/archivefleet/bench/proc"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/scheduler"
)

func main() {
	n := flag.Int("communities", 10000, "communities to backfill")
	archivers := flag.Int("archivers", 2, "archiver processes")
	cpuProfile := flag.String("cpuprofile", "", "write CPU profiles to files starting with this: <prefix>-nats.prof (this process: the embedded NATS server's work) and <prefix>-<service>-<n>.prof")
	flag.Parse()
	dir, err := os.MkdirTemp("", "fleetbench-")
	check(err)
	defer os.RemoveAll(dir)
	e, err := benchfleet.Start(dir, "archiver", "seeder", "announcer")
	check(err)
	defer e.Close()
	ctx := context.Background()
	b := e.Bus

	// Register and fill the communities before any service runs.
	t0 := time.Now()
	coms, err := e.SmallCommunities(ctx, *n)
	check(err)
	log.Printf("registered and filled %d communities in %v", *n, time.Since(t0))

	env := append(e.ServiceEnv(), "ARCHIVEFLEET_HTTP_ADDR=127.0.0.1:0")
	var procs []*exec.Cmd
	start := func(name string, extra ...string) {
		cmd := proc.Command(e.Bin(name))
		cmd.Env = append(append([]string{}, env...), extra...)
		if *cpuProfile != "" {
			cmd.Env = append(cmd.Env, fmt.Sprintf("ARCHIVEFLEET_CPU_PROFILE=%s-%s-%d.prof", *cpuProfile, name, len(procs)))
		}
		logf, _ := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.log", name, len(procs))))
		cmd.Stdout, cmd.Stderr = logf, logf
		check(cmd.Start())
		procs = append(procs, cmd)
	}
	for i := 0; i < *archivers; i++ {
		start("archiver", "ARCHIVEFLEET_WORK_DIR="+filepath.Join(dir, fmt.Sprint("a", i)), "ARCHIVEFLEET_SLOTS=2")
	}
	start("seeder", "ARCHIVEFLEET_SEED_DIR="+filepath.Join(dir, "seed"), "ARCHIVEFLEET_BT_LISTEN=127.0.0.1:0",
		"ARCHIVEFLEET_BT_DHT=false", "ARCHIVEFLEET_BT_TRACKERS=false")
	start("announcer", "ARCHIVEFLEET_SLOTS=4")
	time.Sleep(time.Second)

	cpu0 := map[int]float64{os.Getpid(): proc.CPUSeconds(os.Getpid())}
	for _, p := range procs {
		cpu0[p.Process.Pid] = proc.CPUSeconds(p.Process.Pid)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile + "-nats.prof")
		check(err)
		check(pprof.StartCPUProfile(f))
		defer pprof.StopCPUProfile()
	}
	t1 := time.Now()
	outcomes, err := scheduler.Backfill(ctx, b, coms, time.Now(), 0)
	check(err)
	evs := scheduler.Published(outcomes)
	log.Printf("published %d due events", len(evs))
	ann, err := b.JS.Stream(ctx, bus.StreamAnnounced)
	check(err)
	peaks := map[int]int{}
	for {
		info, err := ann.Info(ctx)
		check(err)
		for _, p := range procs {
			peaks[p.Process.Pid] = max(peaks[p.Process.Pid], proc.StatusKB(p.Process.Pid, "VmHWM"))
		}
		if int(info.State.Msgs) >= *n {
			break
		}
		if time.Since(t1) > 30*time.Minute {
			log.Fatalf("only %d of %d announced after 30 minutes", info.State.Msgs, *n)
		}
		time.Sleep(500 * time.Millisecond)
	}
	elapsed := time.Since(t1)
	out := map[string]any{"communities": *n, "archivers": *archivers, "seconds": elapsed.Seconds(),
		"communities_per_s": float64(*n) / elapsed.Seconds(), "peak_rss_MB": map[string]float64{}, "cpu_ms_per_community": map[string]float64{}}
	cpu := out["cpu_ms_per_community"].(map[string]float64)
	for i, p := range procs {
		name := filepath.Base(p.Path)
		if name == "archiver" {
			name = fmt.Sprintf("archiver-%d", i)
		}
		out["peak_rss_MB"].(map[string]float64)[name] = float64(peaks[p.Process.Pid]) / 1024
		cpu[name] = 1000 * (proc.CPUSeconds(p.Process.Pid) - cpu0[p.Process.Pid]) / float64(*n)
	}
	out["peak_rss_MB"].(map[string]float64)["bench+nats (this process)"] = float64(proc.StatusKB(os.Getpid(), "VmHWM")) / 1024
	cpu["bench+nats (this process)"] = 1000 * (proc.CPUSeconds(os.Getpid()) - cpu0[os.Getpid()]) / float64(*n)
	for _, p := range procs {
		p.Process.Signal(os.Interrupt)
	}
	for _, p := range procs {
		p.Wait()
	}
	json.NewEncoder(os.Stdout).Encode(out)
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
