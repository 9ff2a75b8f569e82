package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// dueMsgs returns the due events queued for a community (no archiver runs
// in these tests, so the work queue keeps them).
func dueMsgs(t *testing.T, b *bus.Bus, c string) []bus.DueEvent {
	t.Helper()
	ctx := context.Background()
	s, err := b.JS.Stream(ctx, bus.StreamDue)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(bus.SubjectDue(c)))
	if err != nil {
		t.Fatal(err)
	}
	var out []bus.DueEvent
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil || m.Subject != bus.SubjectDue(c) {
			continue
		}
		var ev bus.DueEvent
		json.Unmarshal(m.Data, &ev)
		out = append(out, ev)
	}
	return out
}

func TestCommunityCommands(t *testing.T) {
	ns := testenv.NATS(t)
	url := ns.ClientURL()
	b := testenv.Bus(t, ns, bus.Config{})
	var kg struct{ Community, PrivateKey string }
	json.Unmarshal([]byte(mustRun(t, "", "keygen")), &kg)
	id, _ := archive.ParseCommunityID(kg.Community)
	since := time.Now().Add(-3 * time.Hour).Unix()
	out := mustRun(t, "", "community", "add", "-nats", url, "-private-key", kg.PrivateKey, "-interval", "1h",
		"-since", strconv.FormatInt(since, 10), "-topic", "0x01020304")
	if !strings.Contains(out, kg.Community) || !strings.Contains(out, "2 topics") {
		t.Fatalf("add: %s", out)
	}

	// Adding it again is refused; -update changes only what is given.
	if _, errs, code := run(t, "", "community", "add", "-nats", url, "-private-key", kg.PrivateKey); code != 1 ||
		!strings.Contains(errs, "already registered") || !strings.Contains(errs, "-update") {
		t.Fatalf("second add: exit %d, %s", code, errs)
	}
	out = mustRun(t, "", "community", "add", "-update", "-nats", url, "-private-key", kg.PrivateKey, "-interval", "2h")
	com, err := registry.New(b.Communities).Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "updated") || time.Duration(com.Interval) != 2*time.Hour || com.Since != uint64(since) || len(com.Topics) != 2 {
		t.Fatalf("update: %s; stored interval %v since %d topics %v", out, time.Duration(com.Interval), com.Since, com.Topics)
	}
	mustRun(t, "", "community", "add", "-update", "-nats", url, "-private-key", kg.PrivateKey, "-interval", "1h")
	if com.Shard != nil {
		t.Fatalf("default shard stored as %d", *com.Shard)
	}
	// -shard: set on update, keeping the rest; out of range refused.
	mustRun(t, "", "community", "add", "-update", "-nats", url, "-private-key", kg.PrivateKey, "-shard", "64")
	if com, err = registry.New(b.Communities).Get(context.Background(), id); err != nil || com.Shard == nil || *com.Shard != 64 ||
		time.Duration(com.Interval) != time.Hour {
		t.Fatalf("shard update: %+v %v", com, err)
	}
	if _, errs, code := run(t, "", "community", "add", "-update", "-nats", url, "-private-key", kg.PrivateKey, "-shard", "1024"); code == 0 ||
		!strings.Contains(errs, "out of range") {
		t.Fatalf("shard 1024: exit %d, %s", code, errs)
	}

	// list: narrow by default, -wide and -json for the rest.
	list := mustRun(t, "", "community", "list", "-nats", url)
	if !strings.Contains(list, shortID(id)) || !strings.Contains(list, "active") || strings.Contains(list, kg.Community) {
		t.Fatalf("list: %s", list)
	}
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		if n := utf8.RuneCountInString(line); n > 80 {
			t.Fatalf("list line of %d columns does not fit a terminal: %q", n, line)
		}
	}
	if wide := mustRun(t, "", "community", "list", "-wide", "-nats", url); !strings.Contains(wide, kg.Community) || !strings.Contains(wide, "INFOHASH") {
		t.Fatalf("list -wide: %s", wide)
	}
	var row map[string]any
	if err := json.Unmarshal([]byte(mustRun(t, "", "community", "list", "-json", "-nats", url)), &row); err != nil || row["community"] != kg.Community {
		t.Fatalf("list -json: %v %v", row, err)
	}

	// backfill publishes under a fresh id every run, so a re-run (say after
	// a dead letter) is not dropped as a duplicate.
	for i := 1; i <= 2; i++ {
		out = mustRun(t, "", "backfill", "-nats", url, "-community", kg.Community)
		if !strings.Contains(out, kg.Community+": published") || !strings.Contains(out, "published 1 due events") {
			t.Fatalf("backfill %d: %s", i, out)
		}
		evs := dueMsgs(t, b, kg.Community)
		if len(evs) != i {
			t.Fatalf("after backfill %d: %d due events queued", i, len(evs))
		}
		if ev := evs[i-1]; ev.End != uint64(since)+3*3600 || ev.Reason != "backfill" {
			t.Fatalf("due event %+v: want three whole windows after %d", ev, since)
		}
	}
	for i := 1; i <= 2; i++ {
		if out := mustRun(t, "", "trigger", "-nats", url, "-community", kg.Community); !strings.Contains(out, "requested") {
			t.Fatalf("trigger: %s", out)
		}
		evs := dueMsgs(t, b, kg.Community)
		if len(evs) != 2+i {
			t.Fatalf("after trigger %d: %d due events queued", i, len(evs))
		}
		if ev := evs[len(evs)-1]; ev.Reason != "trigger" || ev.End < uint64(time.Now().Unix())-5 {
			t.Fatalf("trigger event %+v: want an end at now", ev)
		}
	}
	// Everything archived: backfill says so and publishes nothing.
	if _, err := b.State.Put(context.Background(), kg.Community, []byte(fmt.Sprintf(`{"lastEnd":%d,"fence":1}`, time.Now().Unix()))); err != nil {
		t.Fatal(err)
	}
	out = mustRun(t, "", "backfill", "-nats", url, "-all")
	if !strings.Contains(out, kg.Community+": already archived") || !strings.Contains(out, "published 0 due events") {
		t.Fatalf("backfill when archived: %s", out)
	}

	mustRun(t, "", "community", "disable", "-nats", url, "-id", kg.Community)
	if list := mustRun(t, "", "community", "list", "-nats", url); !strings.Contains(list, "disabled") {
		t.Fatalf("list after disable: %s", list)
	}
	if out := mustRun(t, "", "backfill", "-nats", url, "-all"); !strings.Contains(out, "disabled, skipped") {
		t.Fatalf("backfill of a disabled community: %s", out)
	}
	mustRun(t, "", "community", "remove", "-nats", url, "-id", kg.Community)
	if list := mustRun(t, "", "community", "list", "-nats", url); strings.Contains(list, shortID(id)) || !strings.Contains(list, "no communities") {
		t.Fatalf("list after remove: %s", list)
	}
	if _, errs, code := run(t, "", "community", "add", "-nats", url, "-private-key", "0x1234"); code != 1 || !strings.Contains(errs, "private-key") {
		t.Fatalf("bad key: %d %s", code, errs)
	}
}

// TestBackfillWait checks -wait shows progress until the window is
// committed and ends the bar's line.
func TestBackfillWait(t *testing.T) {
	ns := testenv.NATS(t)
	url := ns.ClientURL()
	b := testenv.Bus(t, ns, bus.Config{})
	var kg struct{ Community, PrivateKey string }
	json.Unmarshal([]byte(mustRun(t, "", "keygen")), &kg)
	mustRun(t, "", "community", "add", "-nats", url, "-private-key", kg.PrivateKey, "-interval", "1h", "-since", "now-2h")
	go func() {
		// Stand in for the archiver: commit the window once it is queued.
		s, _ := b.JS.Stream(context.Background(), bus.StreamDue)
		for {
			info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(bus.SubjectDue(kg.Community)))
			if err == nil && info.State.Msgs > 0 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(700 * time.Millisecond)
		b.State.Put(context.Background(), kg.Community, []byte(fmt.Sprintf(`{"lastEnd":%d,"fence":1}`, time.Now().Unix())))
	}()
	stdout, stderr, code := run(t, "", "backfill", "-nats", url, "-all", "-wait")
	if code != 0 || !strings.Contains(stdout, "published 1 due events") || !strings.Contains(stderr, "1/1") || !strings.HasSuffix(stderr, "\n") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

func TestDLQCommands(t *testing.T) {
	ns := testenv.NATS(t)
	url := ns.ClientURL()
	b := testenv.Bus(t, ns, bus.Config{})
	ctx := context.Background()
	dl := bus.DeadLetter{Subject: bus.SubjectDue("0x02ab"), Stream: bus.StreamDue, Deliveries: 3, Reason: "boom", Payload: []byte(`{"community":"0x02ab","end":7}`)}
	if list := mustRun(t, "", "dlq", "list", "-nats", url); strings.TrimSpace(list) != "no dead-lettered events" {
		t.Fatalf("empty dlq list: %q", list)
	}
	if _, err := b.Publish(ctx, bus.SubjectDLQ("due"), "dlq:1", dl); err != nil {
		t.Fatal(err)
	}
	list := mustRun(t, "", "dlq", "list", "-nats", url)
	if !strings.Contains(list, "boom") || !strings.Contains(list, "archive.due.0x02ab") {
		t.Fatalf("dlq list: %s", list)
	}
	if out := mustRun(t, "", "dlq", "retry", "-nats", url, "-all"); !strings.Contains(out, "retried 1") {
		t.Fatalf("dlq retry: %s", out)
	}
	s, _ := b.JS.Stream(ctx, bus.StreamDue)
	m, err := s.GetLastMsgForSubject(ctx, bus.SubjectDue("0x02ab"))
	if err != nil || string(m.Data) != string(dl.Payload) {
		t.Fatalf("retried event not back on its subject: %v %s", err, m.Data)
	}
	if list := mustRun(t, "", "dlq", "list", "-nats", url); strings.Contains(list, "boom") {
		t.Fatalf("retried letter still listed: %s", list)
	}
}
