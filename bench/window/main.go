// Command window measures how a build's cost grows with its window: one
// community, one closed window holding N messages (tiny or 300-byte
// payloads), stored before the community is enabled; then the clock runs
// from the moment the window can be built to its commit and to its magnet
// link's announcement (seeded first). It runs the separate services
// (scheduler, archiver, seeder, announcer) against NATS embedded here and
// a redis-server child, or the all-in-one, and reports each case's times
// and the archiver's (or the all-in-one's) peak resident memory.
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
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/archivefleet/archivefleet/bench/benchfleet"
	"github.com/archivefleet/archivefleet/bench/proc"
	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/fleet"
	"github.com/archivefleet/archivefleet/internal/messages"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
)

// result is one case.
type result struct {
	Mode      string  `json:"mode"` // services, allinone
	Messages  int     `json:"messages"`
	Payload   int     `json:"payload_bytes"`
	IngestS   float64 `json:"ingest_s"`
	CommitS   float64 `json:"commit_s"`   // window buildable → state committed
	AnnounceS float64 `json:"announce_s"` // window buildable → magnet announced (seeded before)
	PeakMB    float64 `json:"archiver_peak_rss_MB"`
	DataMB    float64 `json:"data_MB"`
}

func main() {
	sizes := flag.String("sizes", "10000,100000,1000000", "window sizes (messages)")
	payloads := flag.String("payloads", "16,300", "payload sizes (bytes)")
	modes := flag.String("modes", "services,allinone", "services and/or allinone")
	flag.Parse()
	var out []result
	for _, mode := range strings.Split(*modes, ",") {
		for _, p := range strings.Split(*payloads, ",") {
			payload, err := strconv.Atoi(p)
			check(err)
			for _, s := range strings.Split(*sizes, ",") {
				n, err := strconv.Atoi(s)
				check(err)
				r := run(mode, n, payload)
				log.Printf("%s, %d messages of %d bytes: ingest %.1f s, commit %.1f s, announced %.1f s after the window could be built, peak RSS %.0f MB",
					mode, n, payload, r.IngestS, r.CommitS, r.AnnounceS, r.PeakMB)
				out = append(out, r)
			}
		}
	}
	json.NewEncoder(os.Stdout).Encode(out)
}

func run(mode string, n, payload int) result {
	dir, err := os.MkdirTemp("", "windowbench-")
	check(err)
	defer os.RemoveAll(dir)
	ctx := context.Background()
	var b *bus.Bus
	var watch *exec.Cmd // the process whose peak memory is reported
	var procs []*exec.Cmd
	start := func(bin string, env []string, name string) *exec.Cmd {
		cmd := proc.Command(bin)
		cmd.Env = env
		logf, _ := os.Create(filepath.Join(dir, name+".log"))
		cmd.Stdout, cmd.Stderr = logf, logf
		check(cmd.Start())
		procs = append(procs, cmd)
		return cmd
	}
	defer func() {
		for _, p := range procs {
			p.Process.Signal(os.Interrupt)
		}
		for _, p := range procs {
			p.Wait()
		}
	}()
	switch mode {
	case "services":
		e, err := benchfleet.Start(dir, "scheduler", "archiver", "seeder", "announcer")
		check(err)
		defer e.Close()
		b = e.Bus
		env := append(e.ServiceEnv(), "ARCHIVEFLEET_HTTP_ADDR=127.0.0.1:0")
		start(e.Bin("scheduler"), env, "scheduler")
		watch = start(e.Bin("archiver"), append(env, "ARCHIVEFLEET_WORK_DIR="+filepath.Join(dir, "a")), "archiver")
		start(e.Bin("seeder"), append(env, "ARCHIVEFLEET_SEED_DIR="+filepath.Join(dir, "seed"), "ARCHIVEFLEET_BT_LISTEN=127.0.0.1:0",
			"ARCHIVEFLEET_BT_DHT=false", "ARCHIVEFLEET_BT_TRACKERS=false"), "seeder")
		start(e.Bin("announcer"), env, "announcer")
	case "allinone":
		bin := filepath.Join(dir, "bin")
		build := exec.Command("go", "build", "-o", bin+"/", "./cmd/fleet")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		check(build.Run())
		watch = start(filepath.Join(bin, "fleet"), append(os.Environ(), "ARCHIVEFLEET_DATA_DIR="+filepath.Join(dir, "fleet"),
			"ARCHIVEFLEET_DEMO=false", "ARCHIVEFLEET_EMBEDDED_NATS_PORT=-1", "ARCHIVEFLEET_HTTP_ADDR=127.0.0.1:0",
			"ARCHIVEFLEET_LOG_FORMAT=text", "ARCHIVEFLEET_LOG_LEVEL=info", "ARCHIVEFLEET_SETTLE=0s", "ARCHIVEFLEET_TRACKERS=none"), "fleet")
		url := waitLog(filepath.Join(dir, "fleet.log"), regexp.MustCompile(`embedded NATS JetStream started.* url=(\S+)`))
		waitLog(filepath.Join(dir, "fleet.log"), regexp.MustCompile(`fleet started`))
		c := fleet.Common{NATSURL: url, AckWait: 30 * time.Second, MaxDeliver: 20, Replicas: 1}
		b, err = c.Connect(ctx, "bench", fleet.Common{LogLevel: "warn"}.NewLogger("bench"))
		check(err)
		defer b.NC.Close()
	default:
		log.Fatalf("unknown mode %q", mode)
	}

	// One closed window, [now-2h, now-1h), filled while the community is
	// disabled: nothing is built before every message is in.
	now := uint64(time.Now().Unix())
	since := now - 2*3600
	key := fixture.Key()
	com := fixture.CommunityFromKey(key, time.Hour, since, archive.Topic{0xbe, 0, 0, 1})
	com.Disabled = true
	reg := registry.New(b.Communities)
	_, err = registry.NewKeys(b.CommunityKeys).Put(ctx, key)
	check(err)
	check(reg.Put(ctx, com))
	st := &messages.Store{Bus: b}
	t0 := time.Now()
	var batch []archive.Message
	flush := func() {
		res, err := st.Ingest(ctx, com.ID, batch)
		check(err)
		if res.Stored != len(batch) {
			log.Fatalf("ingest: %+v", res)
		}
		batch = batch[:0]
	}
	check(fixture.Messages{N: n, From: since, To: since + 3600, Topics: com.Topics, Size: payload}.Each(func(m archive.Message) error {
		if batch = append(batch, m); len(batch) == 20_000 {
			flush()
		}
		return nil
	}))
	flush()
	r := result{Mode: mode, Messages: n, Payload: payload, IngestS: time.Since(t0).Seconds()}
	check(proc.ResetPeak(watch.Process.Pid))

	com.Disabled = false
	t1 := time.Now()
	check(reg.Put(ctx, com))
	states := &state.Store{KV: b.State}
	for {
		bs, _, err := states.GetBuild(ctx, com.ID.String())
		check(err)
		if r.CommitS == 0 && bs.LastEnd >= since+3600 {
			r.CommitS = time.Since(t1).Seconds()
			r.DataMB = float64(bs.DataBytes) / (1 << 20)
		}
		if r.CommitS > 0 {
			if a, _, err := states.GetAnnounce(ctx, com.ID.String()); err == nil && a.Sent && a.InfoHash == bs.InfoHash && bs.InfoHash != "" {
				r.AnnounceS = time.Since(t1).Seconds()
				break
			}
		}
		if time.Since(t1) > 15*time.Minute {
			log.Fatalf("%s, %d messages: not announced after 15 minutes (committed after %.1f s)", mode, n, r.CommitS)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.PeakMB = float64(proc.StatusKB(watch.Process.Pid, "VmHWM")) / 1024
	return r
}

// waitLog waits for a line matching re in the file and returns its first
// group.
func waitLog(path string, re *regexp.Regexp) string {
	for end := time.Now().Add(2 * time.Minute); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(path)
		if m := re.FindSubmatch(b); m != nil {
			if len(m) > 1 {
				return string(m[1])
			}
			return ""
		}
	}
	log.Fatalf("no %q in %s", re, path)
	return ""
}

func check(err error) {
	if err != nil {
		log.Fatal(fmt.Errorf("window: %w", err))
	}
}
