package faulttest

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/state"
)

// deadLetters returns every dead letter of kind so far.
func (e *env) deadLetters(kind string) []bus.DeadLetter {
	all, err := bus.DeadLetters(context.Background(), e.ctl)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []bus.DeadLetter
	for _, l := range all {
		if l.Stream == map[string]string{"due": bus.StreamDue, "announce": bus.StreamSeeding}[kind] {
			out = append(out, l.DeadLetter)
		}
	}
	return out
}

func (e *env) waitDeadLetter(kind, reason string) bus.DeadLetter {
	e.t.Helper()
	for end := time.Now().Add(60 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		for _, dl := range e.deadLetters(kind) {
			if strings.Contains(dl.Reason, reason) {
				return dl
			}
		}
	}
	e.t.Fatalf("no %s dead letter with %q; have %+v", kind, reason, e.deadLetters(kind))
	return bus.DeadLetter{}
}

// TestBadInput feeds malformed and hostile input to every subject the
// services consume and to the stores they read: each gets a clear error or a
// dead letter with its reason, and valid work goes on.
func TestBadInput(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	now := uint64(time.Now().Unix())
	com := e.register(time.Hour, now-3*3600)
	msgs := sampleMessages(com, 600, 300, now-3*3600, now)
	e.ingest(com, msgs)
	// Garbage written straight into the message store, bypassing ingest.
	if _, err := e.ctl.JS.Publish(ctx, bus.SubjectMessagesLegacy(com.ID.String(), (now-3*3600)/86400), []byte("garbage{")); err != nil {
		t.Fatal(err)
	}
	e.start("archiver", "archiver", "ARCHIVEFLEET_WORK_DIR="+filepath.Join(e.dir, "a"))
	e.start("announcer", "announcer")

	publish := func(subject string, data []byte) {
		if _, err := e.ctl.JS.Publish(ctx, subject, data); err != nil {
			t.Fatal(err)
		}
	}
	publish(bus.SubjectDue("x"), []byte("{not json"))
	publish(bus.SubjectDue("y"), []byte(`{"community":"../../../etc/passwd","end":5}`))
	publish(bus.SubjectDue("z"), []byte(`{"community":"`+com.ID.String()+`","end":99999999999}`))
	publish(bus.SubjectSeeding("x"), []byte("\xff\xfe"))
	publish(bus.SubjectSeeding("y"), []byte(`{"community":"0xZZ"}`))
	e.waitDeadLetter("due", "decode due event")
	e.waitDeadLetter("due", "invalid community id")
	e.waitDeadLetter("due", "in the future")
	// A corrupt registry entry under a valid id.
	corrupt := e.register(time.Hour, now)
	if _, err := e.ctl.Communities.Put(ctx, corrupt.ID.String(), []byte("{not a community")); err != nil {
		t.Fatal(err)
	}
	e.due(corrupt, 0, now-60, "")
	e.waitDeadLetter("due", "stored community is corrupt")
	e.waitDeadLetter("announce", "decode event")
	e.waitDeadLetter("announce", "invalid community id")

	// Ingest over NATS: malformed batches and ids are refused with a reason.
	for _, tc := range []struct{ subject, body, want string }{
		{bus.SubjectIngest(com.ID.String()), "[{", "malformed batch"},
		{bus.SubjectIngest(com.ID.String()), `[{"sig":"0x04","timestamp":1,"topic":"0x01","payload":"0x","hash":"0x01"}]`, "topic"},
		{bus.SubjectIngest("0x0123"), `[]`, "invalid community id"},
	} {
		reply, err := e.ctl.NC.Request(tc.subject, []byte(tc.body), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(reply.Data, []byte(tc.want)) {
			t.Fatalf("ingest %q: reply %s, want %q", tc.body, reply.Data, tc.want)
		}
	}

	// Valid work goes on, skipping the stored garbage.
	e.due(com, 0, now-3*3600+2*3600, "")
	b := e.waitBuilt(com, now-3*3600+2*3600, 30*time.Second)
	e.checkArchived(com, msgs)

	// A corrupted archive object: a fresh archiver must refuse to build on it.
	name := state.ObjectArchive(com.ID.String(), b.Archives[0].ID)
	raw, err := e.ctl.Objects.GetBytes(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	raw[10] ^= 0xff
	if _, err := e.ctl.Objects.Put(ctx, jetstream.ObjectMeta{Name: name}, bytes.NewReader(raw)); err != nil {
		t.Fatal(err)
	}
	e.start("archiver-fresh", "archiver", "ARCHIVEFLEET_WORK_DIR="+filepath.Join(e.dir, "fresh"))
	e.procs[0].kill() // the first archiver's local copy is intact; make the fresh one take the event
	e.due(com, 0, now-3*3600+3*3600, "")
	e.waitDeadLetter("due", "fail verification")
	if got := e.build(com); got.InfoHash != b.InfoHash {
		t.Fatal("a build was committed on top of a corrupted archive")
	}
	t.Logf("FIGURES bad input: %d due and %d announce dead letters, 3 refused ingest batches, 1 stored garbage record skipped, 1 corrupted object refused",
		len(e.deadLetters("due")), len(e.deadLetters("announce")))
}
