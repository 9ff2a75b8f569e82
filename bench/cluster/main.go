// Command cluster measures a backfill on a three-node JetStream cluster (every
// stream, bucket and object store at R3) against the same backfill on one
// server (R1), in the same run: N communities of W windows each (hourly;
// -interval 24h makes each build read W days) are registered and given
// messages, one backfill due event per community is
// published, and the clock runs until every community's state is committed
// to its last window. The archivers run as separate processes (cmd/archiver,
// given every node's URL) with a redis-server child; the NATS nodes run in
// this process. Each round runs both setups, alternating which goes first;
// the result is communities per second, the median and the slowest
// community's time (from the backfill to its commit), and the archivers'
// event outcomes (acks, snoozes, failures), min/median/max over rounds.
//
// With -fault leader, the node leading ARCHIVE_DUE is shut down once a third
// of the communities are committed, and restarted 3 s later; with -fault
// rolling, from then on each node in turn is shut down for 3 s and waited
// for until current (cluster only).
//
//	go run ./bench/cluster -communities 200 -windows 4 -rounds 3
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/archivefleet/archivefleet/bench/proc"
	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/fleet"
	"github.com/archivefleet/archivefleet/internal/messages"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/scheduler"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

var (
	nComs     = flag.Int("communities", 100, "communities to backfill (N)")
	nWindows  = flag.Int("windows", 4, "windows per community (W)")
	interval  = flag.Duration("interval", time.Hour, "the communities' archive interval: a build reads each UTC day its windows span")
	nMsgs     = flag.Int("messages", 40, "messages per community (200 bytes each), spread over its windows")
	rounds    = flag.Int("rounds", 3, "rounds; each runs the single server and the cluster")
	archivers = flag.Int("archivers", 2, "archiver processes")
	slots     = flag.Int("slots", 2, "ARCHIVEFLEET_SLOTS of each archiver")
	fault     = flag.String("fault", "none", "none; leader: shut the ARCHIVE_DUE leader down a third of the way in, restart it 3 s later; rolling: from a third of the way in, restart each node in turn (cluster only)")
	timeout   = flag.Duration("timeout", 20*time.Minute, "give up on a run after this long")
	logLevel  = flag.String("log-level", "warn", "the archivers' ARCHIVEFLEET_LOG_LEVEL (logs kept with -keep)")
	keep      = flag.Bool("keep", false, "keep the work directory (archiver logs) and print its path")
)

func main() {
	flag.Parse()
	if *fault != "none" && *fault != "leader" && *fault != "rolling" {
		log.Fatalf("-fault %q: want none, leader or rolling", *fault)
	}
	dir, err := os.MkdirTemp("", "clusterbench-")
	check(err)
	if *keep {
		log.Printf("work directory: %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	bin := filepath.Join(dir, "bin")
	build := exec.Command("go", "build", "-o", bin+"/", "./cmd/archiver")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	check(build.Run())

	results := map[string][]run{}
	for r := 0; r < *rounds; r++ {
		modes := []string{"single", "cluster"}
		if r%2 == 1 {
			slices.Reverse(modes)
		}
		for _, mode := range modes {
			res := backfill(filepath.Join(dir, fmt.Sprintf("%s-%d", mode, r)), bin, mode)
			log.Printf("round %d %s: %d communities in %.1fs = %.1f/s; per community median %.2fs, p90 %.2fs, slowest %.2fs; events %v %s",
				r+1, mode, *nComs, res.Seconds, res.PerSecond, res.Median, res.P90, res.Slowest, res.Outcomes, res.Killed)
			results[mode] = append(results[mode], res)
		}
	}
	out := map[string]any{"communities": *nComs, "windows": *nWindows, "interval": interval.String(), "messages_per_community": *nMsgs,
		"archivers": *archivers, "slots": *slots, "rounds": *rounds, "fault": *fault}
	for mode, rs := range results {
		out[mode] = summarize(rs)
	}
	if s, c := results["single"], results["cluster"]; len(s) > 0 && len(c) > 0 {
		out["cluster_over_single_communities_per_s"] = median(field(c, func(r run) float64 { return r.PerSecond })) /
			median(field(s, func(r run) float64 { return r.PerSecond }))
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	check(enc.Encode(out))
}

// run is one backfill.
type run struct {
	Seconds   float64            `json:"seconds"`
	PerSecond float64            `json:"communities_per_s"`
	Median    float64            `json:"median_community_s"`
	P90       float64            `json:"p90_community_s"`
	Slowest   float64            `json:"slowest_community_s"`
	Outcomes  map[string]float64 `json:"events"`
	Killed    string             `json:"killed,omitempty"`
}

// backfill runs one backfill of N communities on a fresh NATS (one server,
// or a three-node cluster) and a fresh Redis, and returns its figures.
func backfill(dir, bin, mode string) run {
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var cluster *testenv.Cluster
	var url string
	replicas := 1
	if mode == "cluster" {
		var err error
		cluster, err = testenv.StartCluster(filepath.Join(dir, "nats"), testenv.ClusterSize)
		check(err)
		defer cluster.Shutdown()
		url, replicas = cluster.URLs(), testenv.ClusterSize
	} else {
		ns, err := fleet.EmbeddedNATS(filepath.Join(dir, "nats"), "127.0.0.1", -1)
		check(err)
		defer fleet.StopNATS(context.Background(), ns)
		url = ns.ClientURL()
	}
	c := fleet.Common{NATSURL: url, AckWait: 30 * time.Second, MaxDeliver: 20, Replicas: replicas}
	b, err := c.Connect(ctx, "bench", fleet.Common{LogLevel: "warn"}.NewLogger("bench"))
	check(err)
	defer b.NC.Close()
	// The archivers' pruner makes its stream at start: make it first, so
	// both setups start from the same topology.
	check(bus.SetupPrune(ctx, b))
	check(bus.EnsureMessagesLayout(ctx, b))
	if cluster != nil {
		check(cluster.WaitCurrent(60*time.Second, testenv.FleetStreams()...))
	}

	redisPort := proc.MustFreePort()
	redis := proc.Command("redis-server", "--port", strconv.Itoa(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	check(redis.Start())
	defer func() { redis.Process.Kill(); redis.Wait() }()

	// Communities and their messages, before any archiver runs.
	now := uint64(time.Now().Unix())
	iv := uint64(*interval / time.Second)
	since := now - uint64(*nWindows)*iv - 60
	end := since + uint64(*nWindows)*iv
	reg, keys := registry.New(b.Communities), registry.NewKeys(b.CommunityKeys)
	st := &messages.Store{Bus: b}
	coms := make([]*registry.Community, *nComs)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range coms {
		g.Go(func() error {
			key := fixture.Key()
			com := fixture.CommunityFromKey(key, *interval, since, archive.Topic{1, 2, 3, 4})
			if _, err := keys.Put(gctx, key); err != nil {
				return err
			}
			if err := reg.Put(gctx, com); err != nil {
				return err
			}
			msgs := fixture.Messages{N: *nMsgs, From: since, To: end, Topics: com.Topics[:1],
				Signers: [][]byte{fixture.Signer(key)}, Size: 200}.Make()
			res, err := st.Ingest(gctx, com.ID, msgs)
			if err == nil && res.Stored != len(msgs) {
				err = fmt.Errorf("stored %d of %d messages: %+v", res.Stored, len(msgs), res.Messages)
			}
			coms[i] = com
			return err
		})
	}
	check(g.Wait())

	// Commit times, from the state bucket's watch.
	committed := map[string]time.Time{}
	var mu sync.Mutex
	w, err := b.State.WatchAll(ctx)
	check(err)
	defer w.Stop()
	go func() {
		for e := range w.Updates() {
			if e == nil || strings.Contains(e.Key(), ".") { // initial values done; announce.<c>, waku.<c>…
				continue
			}
			if bs, err := state.DecodeBuild(e.Value()); err == nil && bs.LastEnd >= end {
				mu.Lock()
				if _, ok := committed[e.Key()]; !ok {
					committed[e.Key()] = time.Now()
				}
				mu.Unlock()
			}
		}
	}()

	var procs []*exec.Cmd
	var metrics []string
	for i := 0; i < *archivers; i++ {
		port := proc.MustFreePort()
		metrics = append(metrics, fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
		cmd := proc.Command(filepath.Join(bin, "archiver"))
		cmd.Env = append(os.Environ(), "ARCHIVEFLEET_NATS_URL="+url, fmt.Sprintf("ARCHIVEFLEET_REDIS_ADDR=127.0.0.1:%d", redisPort),
			fmt.Sprintf("ARCHIVEFLEET_HTTP_ADDR=127.0.0.1:%d", port), "ARCHIVEFLEET_LOG_LEVEL="+*logLevel, "ARCHIVEFLEET_TRACKERS=none",
			"ARCHIVEFLEET_SETTLE=0", fmt.Sprintf("ARCHIVEFLEET_NATS_REPLICAS=%d", replicas),
			"ARCHIVEFLEET_WORK_DIR="+filepath.Join(dir, fmt.Sprint("a", i)), fmt.Sprintf("ARCHIVEFLEET_SLOTS=%d", *slots))
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("archiver-%d.log", i)))
		check(err)
		cmd.Stdout, cmd.Stderr = logf, logf
		check(cmd.Start())
		procs = append(procs, cmd)
	}
	defer func() {
		for _, p := range procs {
			p.Process.Signal(os.Interrupt)
		}
		for _, p := range procs {
			p.Wait()
		}
	}()
	for _, m := range metrics { // every archiver is up (its topology set up)
		for deadline := time.Now().Add(60 * time.Second); scrape(m) == nil; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				log.Fatalf("archiver %s not serving after 60s", m)
			}
		}
	}

	t0 := time.Now()
	outcomes, err := scheduler.Backfill(ctx, b, coms, time.Now(), 0)
	check(err)
	if n := len(scheduler.Published(outcomes)); n != *nComs {
		log.Fatalf("published %d due events for %d communities", n, *nComs)
	}
	res := run{}
	killed := -1
	var faults sync.WaitGroup
	defer faults.Wait() // before the deferred shutdown of the nodes
	for {
		mu.Lock()
		n := len(committed)
		mu.Unlock()
		if n >= *nComs {
			break
		}
		if cluster != nil && *fault == "rolling" && killed < 0 && n >= *nComs/3 {
			killed = 0
			res.Killed = fmt.Sprintf("rolling restart from %d/%d committed", n, *nComs)
			faults.Add(1)
			go func() {
				defer faults.Done()
				for i := 0; i < cluster.Size(); i++ {
					cluster.Kill(i)
					time.Sleep(3 * time.Second)
					if err := cluster.Restart(i); err != nil {
						log.Print(err)
					}
					if err := cluster.WaitCurrent(60*time.Second, testenv.FleetStreams()...); err != nil {
						log.Print(err)
					}
				}
			}()
		}
		if cluster != nil && *fault == "leader" && killed < 0 && n >= *nComs/3 {
			killed = cluster.StreamLeader(bus.StreamDue)
			if killed >= 0 {
				res.Killed = fmt.Sprintf("node %s (ARCHIVE_DUE leader) at %d/%d committed", cluster.NodeName(killed), n, *nComs)
				cluster.Kill(killed)
				faults.Add(1)
				go func(i int) {
					defer faults.Done()
					time.Sleep(3 * time.Second)
					if err := cluster.Restart(i); err != nil {
						log.Print(err)
					}
				}(killed)
			}
		}
		if ctx.Err() != nil {
			log.Fatalf("%s: %d of %d communities committed after %v (logs in %s)", mode, n, *nComs, *timeout, dir)
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(t0)
	var per []float64
	mu.Lock()
	for _, at := range committed {
		per = append(per, at.Sub(t0).Seconds())
	}
	mu.Unlock()
	slices.Sort(per)
	res.Seconds, res.PerSecond = elapsed.Seconds(), float64(*nComs)/elapsed.Seconds()
	res.Median, res.P90, res.Slowest = median(per), per[len(per)*9/10], per[len(per)-1]
	res.Outcomes = map[string]float64{}
	for _, m := range metrics {
		for k, v := range scrape(m) {
			res.Outcomes[k] += v
		}
	}
	return res
}

// scrape reads archivefleet_events_handled_total of the due-event consumer
// by outcome from an archiver's /metrics; nil while it does not answer.
func scrape(url string) map[string]float64 {
	resp, err := http.Get(url)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "archivefleet_events_handled_total{") || !strings.Contains(line, `consumer="`+bus.ConsumerArchiver+`"`) {
			continue
		}
		i := strings.Index(line, `outcome="`)
		j := strings.LastIndex(line, " ")
		if i < 0 || j < 0 {
			continue
		}
		outcome := line[i+len(`outcome="`):]
		outcome = outcome[:strings.IndexByte(outcome, '"')]
		v, _ := strconv.ParseFloat(line[j+1:], 64)
		out[outcome] += v
	}
	return out
}

type spread struct {
	Min    float64 `json:"min"`
	Median float64 `json:"median"`
	Max    float64 `json:"max"`
}

func spreadOf(v []float64) spread {
	s := slices.Clone(v)
	slices.Sort(s)
	return spread{Min: s[0], Median: median(s), Max: s[len(s)-1]}
}

func summarize(rs []run) map[string]any {
	outcomes := map[string]spread{}
	for _, k := range []string{"ack", "snooze", "retry", "dead"} {
		outcomes[k] = spreadOf(field(rs, func(r run) float64 { return r.Outcomes[k] }))
	}
	return map[string]any{
		"communities_per_s":   spreadOf(field(rs, func(r run) float64 { return r.PerSecond })),
		"seconds":             spreadOf(field(rs, func(r run) float64 { return r.Seconds })),
		"median_community_s":  spreadOf(field(rs, func(r run) float64 { return r.Median })),
		"slowest_community_s": spreadOf(field(rs, func(r run) float64 { return r.Slowest })),
		"events":              outcomes,
		"rounds":              rs,
	}
}

func field(rs []run, f func(run) float64) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}

// median of v (sorted or not).
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
