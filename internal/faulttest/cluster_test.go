package faulttest

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/messages"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/scheduler"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// clusterEnv is env on a three-node JetStream cluster: every stream, bucket
// and object store at R3, services given every node's URL.
type clusterEnv struct {
	*env
	cluster *testenv.Cluster
}

func newClusterEnv(t *testing.T) *clusterEnv {
	c := testenv.NATSCluster(t)
	e := &env{t: t, dir: t.TempDir(), redisPort: testenv.FreePort(t)}
	e.startRedis()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The services' settings (harness: ACK_WAIT=3s, MAX_DELIVER default
	// 20), so no Setup changes what another one set.
	b, err := c.SetupBus(ctx, bus.Config{Replicas: testenv.ClusterSize, AckWait: 3 * time.Second, MaxDeliver: 20})
	if err != nil {
		e.stopRedis()
		t.Fatal(err)
	}
	e.ctl = b
	// Registered after NATSCluster's: runs before the nodes stop.
	t.Cleanup(func() {
		for _, p := range e.procs {
			p.kill()
		}
		if t.Failed() {
			for _, p := range e.procs {
				t.Logf("--- %s log (tail):\n%s", p.name, p.tail(40))
			}
		}
		e.ctl.NC.Close()
		e.stopRedis()
	})
	if err := c.WaitCurrent(30*time.Second, testenv.FleetStreams()...); err != nil {
		t.Fatal(err)
	}
	return &clusterEnv{env: e, cluster: c}
}

// archiver starts an archiver on the cluster: all three URLs (the process
// fails over when its node goes down) and R3, so its Setup keeps the
// topology's replicas.
func (ce *clusterEnv) archiver(name string) *proc {
	return ce.start(name, "archiver", "ARCHIVEFLEET_NATS_URL="+ce.cluster.URLs(),
		fmt.Sprintf("ARCHIVEFLEET_NATS_REPLICAS=%d", testenv.ClusterSize),
		"ARCHIVEFLEET_WORK_DIR="+filepath.Join(ce.dir, name), "ARCHIVEFLEET_SLOTS=2")
}

// backfillRun is one backfill on the cluster: hourly communities with
// their messages, two archivers, and a backfill event per community.
type backfillRun struct {
	ce        *clusterEnv
	coms      []*registry.Community
	msgs      [][]archive.Message
	end       uint64
	archivers []*proc
	started   time.Time
}

// windowsPerCommunity and messagesPerCommunity size the cluster backfills:
// a few dozen communities of a few windows, so each test stays within ~20 s.
const (
	windowsPerCommunity  = 3
	messagesPerCommunity = 60
)

func (ce *clusterEnv) prepare(k int) *backfillRun {
	now := uint64(time.Now().Unix())
	since := now - windowsPerCommunity*3600 - 60
	r := &backfillRun{ce: ce, end: since + windowsPerCommunity*3600}
	r.coms, r.msgs = ce.communities(k, messagesPerCommunity, since, r.end)
	r.archivers = []*proc{ce.archiver("archiver-1"), ce.archiver("archiver-2")}
	// Both started and set up (the pruner beside the archiver sets up its
	// own stream) before any fault.
	for _, a := range r.archivers {
		a.waitLog(ce.t, 30*time.Second, "archiver started")
		a.waitLog(ce.t, 30*time.Second, "message pruner started")
	}
	return r
}

// publish publishes backfill due events for coms, as archivectl backfill
// does.
func (r *backfillRun) publish(coms []*registry.Community) {
	r.ce.t.Helper()
	if r.started.IsZero() {
		r.started = time.Now()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := scheduler.Backfill(ctx, r.ce.ctl, coms, time.Now(), 0)
	if err != nil {
		r.ce.t.Fatal(err)
	}
	if n := len(scheduler.Published(out)); n != len(coms) {
		r.ce.t.Fatalf("backfill published %d events for %d communities", n, len(coms))
	}
}

// committed counts the communities whose state reached the last window.
func (r *backfillRun) committed() int {
	n := 0
	for _, com := range r.coms {
		if r.ce.build(com).LastEnd >= r.end {
			n++
		}
	}
	return n
}

// waitCommitted waits until at least n communities are committed.
func (r *backfillRun) waitCommitted(n int, timeout time.Duration) {
	r.ce.t.Helper()
	for deadline := time.Now().Add(timeout); r.committed() < n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			r.ce.t.Fatalf("%d of %d communities committed after %v", r.committed(), n, timeout)
		}
	}
}

// check waits for every community and checks the outcome: every window
// archived exactly once, every message in an archive once, no due event
// dead-lettered. It logs what the archivers did.
func (r *backfillRun) check(timeout time.Duration) {
	t := r.ce.t
	t.Helper()
	for _, com := range r.coms {
		r.ce.waitBuilt(com, r.end, timeout)
	}
	took := time.Since(r.started)
	for i, com := range r.coms {
		b := r.ce.checkArchived(com, r.msgs[i])
		if len(b.Archives) != windowsPerCommunity {
			t.Fatalf("community %d: %d archives for %d windows", i, len(b.Archives), windowsPerCommunity)
		}
	}
	dls, err := bus.DeadLetters(context.Background(), r.ce.ctl)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 0 {
		t.Fatalf("%d events dead-lettered, first: %+v", len(dls), dls[0])
	}
	var total workerFigures
	snoozes := map[string]int{}
	for _, a := range r.archivers {
		f := a.workerFigures(t, bus.ConsumerArchiver)
		total.ack, total.snooze, total.retry, total.dead = total.ack+f.ack, total.snooze+f.snooze, total.retry+f.retry, total.dead+f.dead
		for _, line := range strings.Split(a.log.String(), "\n") {
			if m := snoozeReason.FindStringSubmatch(line); m != nil {
				reason := communityID.ReplaceAllString(m[1], "0x…")
				snoozes[reason[:min(len(reason), 120)]]++
			}
		}
	}
	if total.dead != 0 {
		t.Fatalf("archivers dead-lettered %v events", total.dead)
	}
	t.Logf("FIGURES %d communities × %d windows backfilled on 3 nodes (R3) in %v; archivers: %v; snoozed for: %v",
		len(r.coms), windowsPerCommunity, took.Round(10*time.Millisecond), total, snoozes)
}

var (
	snoozeReason = regexp.MustCompile(`msg="snoozed; retrying later".* reason="?(.*?)"?$`)
	communityID  = regexp.MustCompile(`0x[0-9a-f]{66}`)
)

// TestClusterKillDueLeader shuts down the node leading ARCHIVE_DUE (and
// with it the archiver consumer's leader, and clients' connections to it)
// a third of the way through a backfill, and restarts it 2 s later on the
// same store: every window is archived exactly once, nothing is lost and no
// due event is dead-lettered.
func TestClusterKillDueLeader(t *testing.T) {
	ce := newClusterEnv(t)
	r := ce.prepare(30)
	r.publish(r.coms)
	r.waitCommitted(len(r.coms)/3, 60*time.Second)
	leader := ce.cluster.StreamLeader(bus.StreamDue)
	if leader < 0 {
		t.Fatal("ARCHIVE_DUE has no leader")
	}
	at := r.committed()
	ce.cluster.Kill(leader)
	time.Sleep(2 * time.Second)
	if err := ce.cluster.Restart(leader); err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURES killed %s (ARCHIVE_DUE leader) at %d/%d committed, restarted after 2 s; leader now %s",
		ce.cluster.NodeName(leader), at, len(r.coms), nodeName(ce.cluster, ce.cluster.StreamLeader(bus.StreamDue)))
	r.check(90 * time.Second)
	if err := ce.cluster.WaitCurrent(30*time.Second, testenv.FleetStreams()...); err != nil {
		t.Fatal(err)
	}
}

// TestClusterKillMetaLeader shuts down the JetStream meta leader (which
// places every consumer a store read creates) mid-backfill and restarts it.
func TestClusterKillMetaLeader(t *testing.T) {
	ce := newClusterEnv(t)
	r := ce.prepare(30)
	r.publish(r.coms)
	r.waitCommitted(len(r.coms)/3, 60*time.Second)
	meta := ce.cluster.MetaLeader()
	if meta < 0 {
		t.Fatal("no meta leader")
	}
	at := r.committed()
	ce.cluster.Kill(meta)
	newMeta, err := ce.cluster.WaitMetaLeader(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURES killed %s (meta leader) at %d/%d committed; %s took over", ce.cluster.NodeName(meta), at, len(r.coms),
		ce.cluster.NodeName(newMeta))
	time.Sleep(time.Second)
	if err := ce.cluster.Restart(meta); err != nil {
		t.Fatal(err)
	}
	r.check(90 * time.Second)
}

// TestClusterRollingRestart restarts the three nodes one after another, as
// an upgrade does, while builds run: a third of the backfill is published
// just before each node goes down.
func TestClusterRollingRestart(t *testing.T) {
	ce := newClusterEnv(t)
	r := ce.prepare(36)
	wave := len(r.coms) / ce.cluster.Size()
	for i := 0; i < ce.cluster.Size(); i++ {
		r.publish(r.coms[i*wave : (i+1)*wave])
		time.Sleep(100 * time.Millisecond) // builds under way
		ce.cluster.Kill(i)
		time.Sleep(time.Second)
		if err := ce.cluster.Restart(i); err != nil {
			t.Fatal(err)
		}
		if err := ce.cluster.WaitCurrent(60*time.Second, testenv.FleetStreams()...); err != nil {
			t.Fatal(err)
		}
		t.Logf("FIGURES restarted %s; %d/%d committed", ce.cluster.NodeName(i), r.committed(), len(r.coms))
	}
	r.check(90 * time.Second)
}

// TestClusterStoreReads reads one community's messages many times, one
// reader connected to each node: on an
// R3 stream a few percent of ordered-consumer reads used to fail with "no
// responders" (the consumer lives on another node, which the pull request
// outran); none may fail now.
func TestClusterStoreReads(t *testing.T) {
	c := testenv.NATSCluster(t)
	b := testenv.ClusterBus(t, c, bus.Config{Replicas: testenv.ClusterSize, Memory: true})
	e := &env{t: t, dir: t.TempDir(), ctl: b}
	now := uint64(time.Now().Unix())
	com := e.register(time.Hour, now-3*86400)
	msgs := sampleMessages(com, 300, 100, now-3*86400, now) // 4 UTC days: 4 reads per pass
	e.ingest(com, msgs)
	// Read as builds do: up to a fence, which the replica serving a read
	// may reach a little later than the leader (an unbounded read stops at
	// what that replica had).
	upto, err := (&messages.Store{Bus: b}).Fence(context.Background(), com.ID)
	if err != nil {
		t.Fatal(err)
	}
	const passes = 100
	var mu sync.Mutex
	var failures []error
	var wg sync.WaitGroup
	for i := range c.Size() {
		// Each reader on its own connection, to node i.
		nc, err := nats.Connect(c.URL(i))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		rb := *b
		rb.NC = nc
		if rb.JS, err = jetstream.New(nc); err != nil {
			t.Fatal(err)
		}
		st := &messages.Store{Bus: &rb}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range passes / c.Size() {
				got := 0
				for _, err := range st.Between(com.ID, 0, upto).Messages(context.Background(), now-3*86400, now) {
					if err != nil {
						mu.Lock()
						failures = append(failures, err)
						mu.Unlock()
						break
					}
					got++
				}
				if got != len(msgs) {
					mu.Lock()
					failures = append(failures, fmt.Errorf("read %d of %d messages", got, len(msgs)))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d reads failed, first: %v", len(failures), passes/c.Size()*c.Size(), failures[0])
	}
	t.Logf("FIGURES %d passes of 4 day-reads each on an R3 stream, none failed", passes/c.Size()*c.Size())
}

func nodeName(c *testenv.Cluster, i int) string {
	if i < 0 {
		return "none"
	}
	return c.NodeName(i)
}
