package faulttest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/scheduler"
)

// Settings under which the worker before snoozes dead-lettered a valid due
// event within seconds of a busy lock or a Redis outage: deliveries come
// back fast and three of them were the limit.
var fastRedelivery = []string{"ARCHIVEFLEET_ACK_WAIT=2s", "ARCHIVEFLEET_MAX_DELIVER=3", "ARCHIVEFLEET_LOCK_TTL=5s"}

// outage is how long the snooze tests keep Redis down or a lock held: 20 s,
// twice what the worker before snoozes took to dead-letter every event
// under fastRedelivery (~10 s), unless FAULT_OUTAGE says otherwise
// (FAULT_OUTAGE=3m repeats the original report's 3 minutes).
func outage(t *testing.T) time.Duration {
	if v := os.Getenv("FAULT_OUTAGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("FAULT_OUTAGE: %v", err)
		}
		return d
	}
	return 20 * time.Second
}

var listenAddr = regexp.MustCompile(`msg="http listening".* addr=(\S+)`)

// workerFigures scrapes a service's /metrics: its deliveries by outcome and
// the seconds its snoozes asked for.
type workerFigures struct {
	ack, snooze, retry, dead, snoozeSeconds float64
}

func (f workerFigures) deliveries() float64 { return f.ack + f.snooze + f.retry + f.dead }

func (f workerFigures) String() string {
	return fmt.Sprintf("%.0f deliveries handled: %.0f snoozes (%.0f s asked), %.0f failures, %.0f acks, %.0f dead-lettered",
		f.deliveries(), f.snooze, f.snoozeSeconds, f.retry, f.ack, f.dead)
}

func (p *proc) workerFigures(t *testing.T, consumer string) workerFigures {
	t.Helper()
	var f workerFigures
	sc := bufio.NewScanner(strings.NewReader(p.metrics(t)))
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, `consumer="`+consumer+`"`) {
			continue
		}
		fields := strings.Fields(line)
		v, _ := strconv.ParseFloat(fields[len(fields)-1], 64)
		switch {
		case strings.HasPrefix(line, "archivefleet_events_snoozed_seconds_total"):
			f.snoozeSeconds += v
		case !strings.HasPrefix(line, "archivefleet_events_handled_total"):
		case strings.Contains(line, `outcome="ack"`):
			f.ack += v
		case strings.Contains(line, `outcome="snooze"`):
			f.snooze += v
		case strings.Contains(line, `outcome="retry"`):
			f.retry += v
		case strings.Contains(line, `outcome="dead"`):
			f.dead += v
		}
	}
	return f
}

// noDeadLetters fails the test if any due event was dead-lettered.
func (e *env) noDeadLetters(when string) {
	e.t.Helper()
	if dls := e.deadLetters("due"); len(dls) != 0 {
		e.t.Fatalf("%s: %d due events dead-lettered, first: %s", when, len(dls), dls[0].Reason)
	}
}

// TestRedisOutageSnoozes stops Redis for 3 minutes while due events for
// several communities and windows arrive, with ACK_WAIT=2s and
// MAX_DELIVER=3: the archiver snoozes them (waiting for the lock service is
// not failing), so nothing is dead-lettered, nothing is built without a
// lock, and once Redis is back every window is archived exactly once.
func TestRedisOutageSnoozes(t *testing.T) {
	t.Parallel()
	down := outage(t)
	e := newEnv(t)
	now := uint64(time.Now().Unix())
	since := now - 4*3600
	coms, msgs := e.communities(3, 300, since, now)
	a := e.start("archiver", "archiver", append(fastRedelivery, "ARCHIVEFLEET_WORK_DIR="+filepath.Join(e.dir, "a"))...)
	// One window under a working Redis, so a fence exists before the loss.
	e.due(coms[0], since, since+3600, "")
	e.waitBuilt(coms[0], since+3600, 30*time.Second)

	e.stopRedis()
	t0 := time.Now()
	for _, com := range coms {
		e.due(com, 0, since+2*3600, "")
	}
	time.Sleep(down / 2)
	e.noDeadLetters("half-way through the outage")
	for _, com := range coms {
		e.due(com, 0, since+3*3600, "")
	}
	time.Sleep(down - time.Since(t0))
	for i, com := range coms {
		if b := e.build(com); (i == 0 && b.LastEnd != since+3600) || (i > 0 && b.LastEnd != 0) {
			t.Fatalf("community %d built to %d while Redis was down", i, b.LastEnd)
		}
	}
	e.noDeadLetters("after the outage")
	during := a.workerFigures(t, bus.ConsumerArchiver)

	e.startRedis()
	for i, com := range coms {
		e.waitBuilt(com, since+3*3600, 60*time.Second)
		e.checkArchived(com, msgs[i])
	}
	time.Sleep(3 * time.Second) // the superseded events drain
	e.noDeadLetters("after recovery")
	after := a.workerFigures(t, bus.ConsumerArchiver)
	if during.retry != 0 || during.dead != 0 || during.snooze == 0 {
		t.Fatalf("during the outage: %v; want snoozes only", during)
	}
	t.Logf("FIGURES Redis down %v, 6 due events for 3 communities: during the outage %v; in all %v; every window archived once",
		down.Round(time.Second), during, after)
}

// TestLockHeldSnoozes holds a community's lock in Redis for 3 minutes, as
// another holder would (the key internal/lock uses, with a long TTL), while
// due events for it arrive, with ACK_WAIT=2s and MAX_DELIVER=3: they are
// snoozed, not failed, another community is built meanwhile, and once the
// lock is released every window is archived exactly once.
func TestLockHeldSnoozes(t *testing.T) {
	t.Parallel()
	held := outage(t)
	e := newEnv(t)
	ctx := context.Background()
	now := uint64(time.Now().Unix())
	since := now - 4*3600
	coms, msgs := e.communities(2, 300, since, now)
	busy, free := coms[0], coms[1]
	rc := redis.NewClient(&redis.Options{Addr: e.redisAddr()})
	defer rc.Close()
	key := "archivefleet:lock:" + busy.ID.String()
	if ok, err := rc.SetNX(ctx, key, "another-holder", 30*time.Minute).Result(); err != nil || !ok {
		t.Fatalf("take the lock: %v %v", ok, err)
	}
	a := e.start("archiver", "archiver", append(fastRedelivery, "ARCHIVEFLEET_WORK_DIR="+filepath.Join(e.dir, "a"))...)
	t0 := time.Now()
	e.due(busy, 0, since+3600, "")
	e.due(busy, 0, since+2*3600, "")
	e.due(free, 0, since+3*3600, "")
	e.waitBuilt(free, since+3*3600, 30*time.Second)
	e.checkArchived(free, msgs[1])
	time.Sleep(held / 2)
	e.noDeadLetters("half-way through")
	e.due(busy, 0, since+3*3600, "")
	time.Sleep(held - time.Since(t0))
	if b := e.build(busy); b.LastEnd != 0 {
		t.Fatalf("built to %d while another holder had the lock", b.LastEnd)
	}
	e.noDeadLetters("while the lock was held")
	during := a.workerFigures(t, bus.ConsumerArchiver)

	if n, err := rc.Del(ctx, key).Result(); err != nil || n != 1 {
		t.Fatalf("release the lock: %d %v", n, err)
	}
	e.waitBuilt(busy, since+3*3600, 60*time.Second)
	e.checkArchived(busy, msgs[0])
	time.Sleep(3 * time.Second)
	e.noDeadLetters("after the release")
	after := a.workerFigures(t, bus.ConsumerArchiver)
	if during.retry != 0 || during.dead != 0 || during.snooze == 0 {
		t.Fatalf("while the lock was held: %v; want snoozes (and the other community's ack) only", during)
	}
	t.Logf("FIGURES lock held %v, 3 due events waiting: while held %v; in all %v; every window archived once",
		held.Round(time.Second), during, after)
}

// TestDeadLetteredWindowBackfilled: a valid due event dead-lettered after
// MAX_DELIVER real failures (here the archiver's work dir is unusable) is
// archived once the cause is fixed and an operator re-runs a backfill
// (scheduler.Backfill, what archivectl backfill calls) or retries the dead
// letter (bus.Redeliver, what archivectl dlq retry calls). The backfill runs
// within the dedup window of the dead event, where an event under the
// scheduler's message id would be dropped as its duplicate.
func TestDeadLetteredWindowBackfilled(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	now := uint64(time.Now().Unix())
	since := now - 2*3600 - 100
	coms, msgs := e.communities(2, 300, since, now)
	work := filepath.Join(e.dir, "a")
	os.MkdirAll(work, 0o700)
	broken := filepath.Join(work, "archivedata")
	if err := os.WriteFile(broken, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.start("archiver", "archiver", append(fastRedelivery, "ARCHIVEFLEET_WORK_DIR="+work)...)
	end := since + 2*3600 // the window a backfill publishes now
	for _, com := range coms {
		e.due(com, 0, end, "")
	}
	for deadline := time.Now().Add(60 * time.Second); len(e.deadLetters("due")) < 2; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("events not dead-lettered: %+v", e.deadLetters("due"))
		}
	}
	for _, dl := range e.deadLetters("due") {
		if !strings.Contains(dl.Reason, "gave up after 3 failures") {
			t.Fatalf("dead letter %+v", dl)
		}
	}
	if err := os.Remove(broken); err != nil { // the operator fixes the disk
		t.Fatal(err)
	}

	// The scheduler's id for the window is still in the dedup window.
	ev := bus.DueEvent{Community: coms[0].ID.String(), End: end}
	if ack, err := e.ctl.Publish(ctx, bus.SubjectDue(ev.Community), ev.MsgID(), ev); err != nil || !ack.Duplicate {
		t.Fatalf("an event under the scheduler's id was not dropped as a duplicate (%v): the backfill check proves nothing", err)
	}
	outcomes, err := scheduler.Backfill(ctx, e.ctl, []*registry.Community{coms[0]}, time.Now(), 0)
	if evs := scheduler.Published(outcomes); err != nil || len(evs) != 1 || evs[0].End != end {
		t.Fatalf("backfill: %+v %v", outcomes, err)
	}
	e.waitBuilt(coms[0], end, 60*time.Second)
	e.checkArchived(coms[0], msgs[0])

	all, err := bus.DeadLetters(ctx, e.ctl)
	if err != nil {
		t.Fatal(err)
	}
	for _, dl := range all {
		if strings.Contains(string(dl.Payload), coms[1].ID.String()) {
			if err := bus.Redeliver(ctx, e.ctl, dl); err != nil {
				t.Fatal(err)
			}
		}
	}
	e.waitBuilt(coms[1], end, 60*time.Second)
	e.checkArchived(coms[1], msgs[1])
	t.Logf("FIGURES 2 valid due events dead-lettered after 3 failures each; archived after the fix by a backfill (new message id) and by a DLQ retry")
}

// TestTriggerWaitsForSettle: a due event ending now (as archivectl trigger
// sends) is snoozed until its end plus ARCHIVEFLEET_SETTLE, without counting
// a failure, and messages still in flight when it was published (ingested
// after it, stamped before its end) land in the archive.
func TestTriggerWaitsForSettle(t *testing.T) {
	const settle = 5 * time.Second
	e := newEnv(t)
	now := uint64(time.Now().Unix())
	since := now - 3600 - 600
	com := e.register(time.Hour, since)
	msgs := sampleMessages(com, 400, 200, since, now)
	e.ingest(com, msgs[:380])
	a := e.start("archiver", "archiver", append(fastRedelivery, "ARCHIVEFLEET_WORK_DIR="+filepath.Join(e.dir, "a"),
		"ARCHIVEFLEET_SETTLE="+settle.String())...)
	a.waitLog(t, 10*time.Second, "archiver started")
	e.due(com, since, now, fmt.Sprintf("trigger:%s:%d", com.ID, now))
	a.waitLog(t, 10*time.Second, "window not settled yet", "build_at=")
	e.ingest(com, msgs[380:]) // in flight when the window closed
	b := e.waitBuilt(com, now, 30*time.Second)
	started := lineTime(t, a.waitLog(t, time.Second, "build started"))
	if settled := time.Unix(int64(now), 0).Add(settle); started.Before(settled) {
		t.Fatalf("build started at %v, before the window settled at %v", started, settled)
	}
	e.checkArchived(com, msgs)
	if n := strings.Count(a.log.String(), "window not settled yet"); n != 1 {
		t.Fatalf("logged %d times that the window was not settled, want once", n)
	}
	f := a.workerFigures(t, bus.ConsumerArchiver)
	for deadline := time.Now().Add(5 * time.Second); f.ack == 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		f = a.workerFigures(t, bus.ConsumerArchiver) // the ack follows the commit
	}
	if f.retry != 0 || f.dead != 0 || f.snooze == 0 || f.ack != 1 {
		t.Fatalf("worker figures %v: want snoozes and one ack, no failures", f)
	}
	t.Logf("FIGURES trigger with SETTLE=%v: built %v after the window end, %d archives; %v",
		settle, started.Sub(time.Unix(int64(now), 0)).Round(100*time.Millisecond), len(b.Archives), f)
}

// metrics is the text of a service's /metrics (its listen address is in
// its log).
func (p *proc) metrics(t *testing.T) string {
	t.Helper()
	m := listenAddr.FindStringSubmatch(p.log.String())
	if m == nil {
		t.Fatalf("%s: no http listening line", p.name)
	}
	resp, err := http.Get("http://" + m[1] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}
