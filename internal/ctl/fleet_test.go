package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/messages"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
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
	// The key from standard input: no warning; it goes to the keys bucket,
	// not into the registry entry.
	out, errs, code := run(t, kg.PrivateKey+"\n", "community", "add", "-nats", url, "-private-key", "-", "-interval", "1h",
		"-since", strconv.FormatInt(since, 10), "-topic", "0x01020304")
	if code != 0 || !strings.Contains(out, kg.Community) || !strings.Contains(out, "2 topics") || errs != "" {
		t.Fatalf("add: exit %d, %s, stderr %q", code, out, errs)
	}
	if key, err := registry.NewKeys(b.CommunityKeys).Get(context.Background(), id); err != nil || archive.HexBytes(key).String() != kg.PrivateKey {
		t.Fatalf("stored key %x, %v", key, err)
	}
	if e, err := b.Communities.Get(context.Background(), kg.Community); err != nil || strings.Contains(string(e.Value()), kg.PrivateKey[2:]) {
		t.Fatalf("registry entry %s (%v) holds the key", e.Value(), err)
	}

	// Adding it again is refused; -update changes only what is given. A key
	// on the command line still works, with a warning.
	if _, errs, code := run(t, "", "community", "add", "-nats", url, "-private-key", kg.PrivateKey); code != 1 ||
		!strings.Contains(errs, "already registered") || !strings.Contains(errs, "-update") || !strings.Contains(errs, "visible to other users") {
		t.Fatalf("second add: exit %d, %s", code, errs)
	}
	out = mustRun(t, "", "community", "add", "-update", "-nats", url, "-id", kg.Community, "-interval", "2h")
	com, err := registry.New(b.Communities).Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "updated") || time.Duration(com.Interval) != 2*time.Hour || com.Since != uint64(since) || len(com.Topics) != 2 {
		t.Fatalf("update: %s; stored interval %v since %d topics %v", out, time.Duration(com.Interval), com.Since, com.Topics)
	}
	// A key file readable by others is used, with a warning; keygen -out
	// writes one only its owner reads, and never overwrites one.
	dir := t.TempDir()
	loose := filepath.Join(dir, "loose.key")
	if err := os.WriteFile(loose, []byte(kg.PrivateKey+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := run(t, "", "community", "add", "-update", "-nats", url, "-private-key-file", loose, "-interval", "1h"); code != 0 ||
		!strings.Contains(errs, "readable by other users") || !strings.Contains(errs, "chmod 600") {
		t.Fatalf("update with a loose key file: exit %d, stderr %q", code, errs)
	}
	var kg2 struct{ Community, PrivateKey, KeyFile string }
	kf := filepath.Join(dir, "new.key")
	json.Unmarshal([]byte(mustRun(t, "", "keygen", "-out", kf)), &kg2)
	if fi, err := os.Stat(kf); err != nil || fi.Mode().Perm() != 0o600 || kg2.PrivateKey != "" || kg2.KeyFile != kf {
		t.Fatalf("keygen -out: %+v, file %v %v", kg2, fi, err)
	}
	if _, errs, code := run(t, "", "keygen", "-out", kf); code != 1 || !strings.Contains(errs, "not overwriting") {
		t.Fatalf("keygen -out over an existing file: exit %d, %s", code, errs)
	}
	if out, errs, code := run(t, "", "community", "add", "-nats", url, "-private-key-file", kf); code != 0 || errs != "" ||
		!strings.Contains(out, kg2.Community) {
		t.Fatalf("add from keygen's file: exit %d, %s, stderr %q", code, out, errs)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"community", "add", "-nats", url}, "-private-key-file FILE"},
		{[]string{"community", "add", "-nats", url, "-id", kg.Community}, "needs its private key"},
		{[]string{"community", "add", "-nats", url, "-private-key-file", kf, "-private-key", "-"}, "not both"},
		{[]string{"community", "add", "-update", "-nats", url, "-private-key-file", filepath.Join(dir, "none")}, "no such file"},
		{[]string{"community", "add", "-update", "-nats", url, "-id", fixture.ID(fixture.Key()).String()}, "is not registered"},
	} {
		if _, errs, code := run(t, "", tc.args...); code != 1 || !strings.Contains(errs, tc.want) {
			t.Fatalf("%v: exit %d, %s (want %q)", tc.args, code, errs, tc.want)
		}
	}
	mustRun(t, "", "community", "remove", "-nats", url, "-id", kg2.Community)
	mustRun(t, "", "community", "add", "-update", "-nats", url, "-id", kg.Community, "-interval", "1h")
	if com.Shard != nil {
		t.Fatalf("default shard stored as %d", *com.Shard)
	}
	// -shard: set on update, keeping the rest; out of range refused.
	mustRun(t, "", "community", "add", "-update", "-nats", url, "-id", kg.Community, "-shard", "64")
	if com, err = registry.New(b.Communities).Get(context.Background(), id); err != nil || com.Shard == nil || *com.Shard != 64 ||
		time.Duration(com.Interval) != time.Hour {
		t.Fatalf("shard update: %+v %v", com, err)
	}
	if _, errs, code := run(t, "", "community", "add", "-update", "-nats", url, "-id", kg.Community, "-shard", "1024"); code == 0 ||
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
	if _, err := registry.NewKeys(b.CommunityKeys).Get(context.Background(), id); !errors.Is(err, registry.ErrNoKey) {
		t.Fatalf("key after remove: %v", err)
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

// TestCommunityChats checks -chat on add (channel uuids alone or whole chat
// ids, repeated or comma-separated), replacing and clearing the list with
// -update, the errors for chats that are not the community's, and what
// list shows: chats, topics, the newest message held (after the fleet's
// NATS ingest) and the back-fill progress.
func TestCommunityChats(t *testing.T) {
	ns := testenv.NATS(t)
	url := ns.ClientURL()
	b := testenv.Bus(t, ns, bus.Config{})
	ctx := context.Background()
	var kg, foreign struct{ Community, PrivateKey string }
	json.Unmarshal([]byte(mustRun(t, "", "keygen")), &kg)
	json.Unmarshal([]byte(mustRun(t, "", "keygen")), &foreign)
	id, _ := archive.ParseCommunityID(kg.Community)
	const uuidA, uuidB, uuidC = "3f0b3c2e-6a0e-4d5c-9a57-0c2d1b1c7a11", "b5a1d9f4-2c3e-4f6a-8b7c-9d0e1f2a3b4c", "0e9d8c7b-6a5f-4e3d-2c1b-0a9f8e7d6c5b"
	chatA, chatB, chatC := kg.Community+uuidA, kg.Community+uuidB, kg.Community+uuidC
	reg := registry.New(b.Communities)
	stored := func() *registry.Community {
		t.Helper()
		c, err := reg.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	explicit := archive.Topic{1, 2, 3, 4}
	wantCom := func(chats []string, topics ...archive.Topic) {
		t.Helper()
		c := stored()
		want := append([]archive.Topic{explicit, registry.UniversalTopic(id)}, topics...)
		if !slices.Equal(c.Chats, chats) || len(c.Topics) != len(want) {
			t.Fatalf("stored chats %q topics %v; want chats %q topics %v", c.Chats, c.Topics, chats, want)
		}
		for _, w := range want {
			if !slices.Contains(c.Topics, w) {
				t.Fatalf("stored topics %v lack %v", c.Topics, w)
			}
		}
	}

	// A uuid alone gets the community id; a whole id's community part is
	// lower-cased; repeated and comma-separated.
	out := mustRun(t, "", "community", "add", "-nats", url, "-private-key", kg.PrivateKey, "-since", "now-1h", "-topic", explicit.String(),
		"-chat", uuidA+", 0X"+strings.ToUpper(kg.Community[2:])+uuidB)
	if !strings.Contains(out, "registered") || !strings.Contains(out, "4 topics, 2 channel chats") {
		t.Fatalf("add: %s", out)
	}
	wantCom([]string{chatA, chatB}, registry.ChatTopic(chatA), registry.ChatTopic(chatB))

	// -update without -chat keeps them; with -chat replaces the list and
	// drops the replaced chats' topics, keeping -topic's.
	mustRun(t, "", "community", "add", "-update", "-nats", url, "-id", kg.Community, "-interval", "2h")
	wantCom([]string{chatA, chatB}, registry.ChatTopic(chatA), registry.ChatTopic(chatB))
	out = mustRun(t, "", "community", "add", "-update", "-nats", url, "-id", kg.Community, "-chat", uuidC)
	if !strings.Contains(out, "updated") || !strings.Contains(out, "(chats;") || !strings.Contains(out, "1 channel chats") {
		t.Fatalf("update -chat: %s", out)
	}
	wantCom([]string{chatC}, registry.ChatTopic(chatC))

	// Chats that are not this community's channel chats are refused with
	// the reason, and nothing changes.
	for _, tc := range []struct {
		chats []string
		want  string
	}{
		{[]string{foreign.Community + uuidA}, "is not a channel chat id of this community"},
		{[]string{"-memberUpdate"}, "is not a channel chat id of this community"},
		{[]string{kg.Community + "-magnetlinks"}, "is not a channel chat id of this community"},
		{[]string{kg.Community}, "is not a channel chat id of this community"},
		{[]string{uuidA, chatA}, "listed twice"},
	} {
		args := []string{"community", "add", "-update", "-nats", url, "-id", kg.Community}
		for _, c := range tc.chats {
			args = append(args, "-chat", c)
		}
		if _, errs, code := run(t, "", args...); code != 1 || !strings.Contains(errs, tc.want) {
			t.Fatalf("-chat %q: exit %d, %s (want %q)", tc.chats, code, errs, tc.want)
		}
		wantCom([]string{chatC}, registry.ChatTopic(chatC))
	}

	// list before any message or back-fill.
	var row struct {
		Chats         []string        `json:"chats"`
		Topics        []archive.Topic `json:"topics"`
		NewestMessage uint64          `json:"newestMessage"`
		Backfill      *state.Backfill `json:"wakuBackfill"`
	}
	listJSON := func() {
		t.Helper()
		row.Backfill = nil
		if err := json.Unmarshal([]byte(mustRun(t, "", "community", "list", "-json", "-nats", url)), &row); err != nil {
			t.Fatal(err)
		}
	}
	listJSON()
	if !slices.Equal(row.Chats, []string{chatC}) || !slices.Contains(row.Topics, registry.ChatTopic(chatC)) || row.NewestMessage != 0 ||
		row.Backfill != nil {
		t.Fatalf("list -json before messages: %+v", row)
	}
	wide := mustRun(t, "", "community", "list", "-wide", "-nats", url)
	if !strings.Contains(wide, "NEWEST MESSAGE") || !strings.Contains(wide, registry.ChatTopic(chatC).String()) {
		t.Fatalf("list -wide: %s", wide)
	}

	// A message on chat C's topic through the fleet's NATS ingest; one on
	// the replaced chat A's topic is refused.
	srv, err := (&messages.Store{Bus: b, Logger: slog.New(slog.DiscardHandler)}).ServeNATS(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer srv()
	sent := uint64(time.Now().Unix()) - 600
	msgs := fixture.Messages{N: 2, From: sent, Topics: []archive.Topic{registry.ChatTopic(chatC), registry.ChatTopic(chatA)}}.Make()
	var batch bytes.Buffer
	for _, m := range msgs {
		line, _ := json.Marshal(m)
		batch.Write(append(line, '\n'))
	}
	reply, err := b.NC.Request(bus.SubjectIngest(kg.Community), batch.Bytes(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var res messages.IngestResult
	if err := json.Unmarshal(reply.Data, &res); err != nil || res.Stored != 1 || res.Refused != 1 {
		t.Fatalf("ingest: %s %v", reply.Data, err)
	}

	// Back-fill progress, as the Waku edge writes it.
	upto, at := time.Unix(int64(sent)-3600, 0).UTC(), time.Now().Add(-5*time.Minute).UTC().Truncate(time.Second)
	bf := state.Backfill{Upto: upto, At: at, Messages: 7, Stored: 3, Pages: 2,
		LastError: "store node 16Uiu2HAm…: context deadline exceeded\nafter 3 tries", LastErrorAt: at.Add(time.Minute)}
	if _, err := (&state.Store{KV: b.State}).Put(ctx, state.BackfillKey(kg.Community), bf, 0); err != nil {
		t.Fatal(err)
	}
	listJSON()
	if row.NewestMessage != sent || row.Backfill == nil || !row.Backfill.Upto.Equal(upto) || !row.Backfill.At.Equal(at) ||
		row.Backfill.LastError != bf.LastError || row.Backfill.Stored != 3 {
		t.Fatalf("list -json: newest %d (want %d), back-fill %+v", row.NewestMessage, sent, row.Backfill)
	}
	wide = mustRun(t, "", "community", "list", "-wide", "-nats", url)
	lines := strings.Split(strings.TrimSpace(wide), "\n")
	if len(lines) != 2 {
		t.Fatalf("list -wide: %s", wide)
	}
	for _, want := range []string{kg.Community, ts(sent), upto.Format(time.RFC3339), at.Format(time.RFC3339),
		bf.LastErrorAt.Format(time.RFC3339) + " store node 16Uiu2HAm…: context deadline exceeded after 3 tries"} {
		if !strings.Contains(lines[1], want) {
			t.Fatalf("list -wide lacks %q:\n%s", want, wide)
		}
	}
	list := mustRun(t, "", "community", "list", "-nats", url)
	if !strings.Contains(list, "Waku back-fill of "+shortID(id)+" failing (4m") || !strings.Contains(list, "ago): store node") {
		t.Fatalf("list does not show the failing back-fill:\n%s", list)
	}
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		if n := utf8.RuneCountInString(line); n > 80 {
			t.Fatalf("list line of %d columns does not fit a terminal: %q", n, line)
		}
	}

	// -chat "" clears the list (and chat C's topic).
	out = mustRun(t, "", "community", "add", "-update", "-nats", url, "-id", kg.Community, "-chat", "")
	if !strings.Contains(out, "0 channel chats") {
		t.Fatalf("clear: %s", out)
	}
	wantCom(nil)
	listJSON()
	if row.Chats == nil || len(row.Chats) != 0 {
		t.Fatalf("list -json after clearing: chats %#v, want []", row.Chats)
	}
}

// TestConflictsCommand: a forged record carrying a stored message's hash
// shows in conflicts list, both contents, for its community and not for
// another.
func TestConflictsCommand(t *testing.T) {
	ns := testenv.NATS(t)
	url := ns.ClientURL()
	b := testenv.Bus(t, ns, bus.Config{})
	ctx := context.Background()
	if out := mustRun(t, "", "conflicts", "list", "-nats", url); strings.TrimSpace(out) != "no conflicts" {
		t.Fatalf("empty: %q", out)
	}
	now := uint64(time.Now().Unix())
	com := fixture.Community(7*24*time.Hour, now-3600, archive.Topic{1, 2, 3, 4})
	if err := registry.New(b.Communities).Put(ctx, com); err != nil {
		t.Fatal(err)
	}
	msgs := fixture.Messages{N: 2, From: now - 60, Topics: com.Topics}.Make()
	forged := msgs[1]
	forged.Hash = msgs[0].Hash
	st := &messages.Store{Bus: b, Logger: slog.New(slog.DiscardHandler)}
	if res, err := st.Ingest(ctx, com.ID, []archive.Message{forged, msgs[0]}); err != nil || res.Conflicts != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	out := mustRun(t, "", "conflicts", "list", "-nats", url)
	if !strings.Contains(out, "REFUSED") || !strings.Contains(out, fmt.Sprintf("ts %d", msgs[0].Timestamp)) || !strings.Contains(out, "fleet") {
		t.Fatalf("conflicts list: %s", out)
	}
	var rec messages.ConflictRecord
	if err := json.Unmarshal([]byte(mustRun(t, "", "conflicts", "list", "-json", "-community", com.ID.String(), "-nats", url)), &rec); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rec.Refused.Payload, msgs[0].Payload) || rec.Stored == nil || !bytes.Equal(rec.Stored.Payload, forged.Payload) {
		t.Fatalf("-json: %+v", rec)
	}
	other := fixture.Community(time.Hour, now, archive.Topic{9})
	if out := mustRun(t, "", "conflicts", "list", "-community", other.ID.String(), "-nats", url); strings.TrimSpace(out) != "no conflicts" {
		t.Fatalf("another community: %s", out)
	}
}
