package ctl

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

func TestCommunityCommands(t *testing.T) {
	ns := testenv.NATS(t)
	url := ns.ClientURL()
	var kg struct{ Community, PrivateKey string }
	json.Unmarshal([]byte(mustRun(t, "", "keygen")), &kg)
	since := time.Now().Add(-3 * time.Hour).Unix()
	out := mustRun(t, "", "community", "add", "-nats", url, "-private-key", kg.PrivateKey, "-interval", "1h",
		"-since", strconv.FormatInt(since, 10), "-topic", "0x01020304")
	if !strings.Contains(out, kg.Community) || !strings.Contains(out, "2 topics") {
		t.Fatalf("add: %s", out)
	}
	list := mustRun(t, "", "community", "list", "-nats", url)
	if !strings.Contains(list, kg.Community) || !strings.Contains(list, "active") {
		t.Fatalf("list: %s", list)
	}
	out = mustRun(t, "", "backfill", "-nats", url, "-community", kg.Community)
	if !strings.Contains(out, "published 1 due events") {
		t.Fatalf("backfill: %s", out)
	}
	b := testenv.Bus(t, ns, bus.Config{})
	s, _ := b.JS.Stream(context.Background(), bus.StreamDue)
	m, err := s.GetLastMsgForSubject(context.Background(), bus.SubjectDue(kg.Community))
	if err != nil {
		t.Fatal(err)
	}
	var ev bus.DueEvent
	json.Unmarshal(m.Data, &ev)
	if ev.End != uint64(since)+3*3600 || ev.Reason != "backfill" {
		t.Fatalf("due event %+v: want three whole windows after %d", ev, since)
	}
	if out := mustRun(t, "", "trigger", "-nats", url, "-community", kg.Community); !strings.Contains(out, "requested") {
		t.Fatalf("trigger: %s", out)
	}
	m, err = s.GetLastMsgForSubject(context.Background(), bus.SubjectDue(kg.Community))
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(m.Data, &ev)
	if ev.Reason != "trigger" || ev.End < uint64(time.Now().Unix())-5 {
		t.Fatalf("trigger event %+v: want an end at now", ev)
	}
	mustRun(t, "", "community", "disable", "-nats", url, "-id", kg.Community)
	if list := mustRun(t, "", "community", "list", "-nats", url); !strings.Contains(list, "disabled") {
		t.Fatalf("list after disable: %s", list)
	}
	mustRun(t, "", "community", "remove", "-nats", url, "-id", kg.Community)
	if list := mustRun(t, "", "community", "list", "-nats", url); strings.Contains(list, kg.Community) {
		t.Fatalf("list after remove: %s", list)
	}
	if _, errs, code := run(t, "", "community", "add", "-nats", url, "-private-key", "0x1234"); code != 1 || !strings.Contains(errs, "private-key") {
		t.Fatalf("bad key: %d %s", code, errs)
	}
}

func TestDLQCommands(t *testing.T) {
	ns := testenv.NATS(t)
	url := ns.ClientURL()
	b := testenv.Bus(t, ns, bus.Config{})
	ctx := context.Background()
	dl := bus.DeadLetter{Subject: bus.SubjectDue("0x02ab"), Stream: bus.StreamDue, Deliveries: 3, Reason: "boom", Payload: []byte(`{"community":"0x02ab","end":7}`)}
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
