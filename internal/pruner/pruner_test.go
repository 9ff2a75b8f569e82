package pruner

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/messages"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

const (
	day       = 86400
	pruneDay0 = 1_700_006_400 // a UTC midnight
)

var (
	pruneKey   = bytes.Repeat([]byte{9}, 32)
	pruneCom   = fixture.ID(pruneKey)
	pruneTopic = archive.Topic{5}
)

// pruneRec is a message a test stores.
type pruneRec struct {
	ts    uint64
	large bool // payload in the object store
}

// stored is a stored message: its record's sequence.
type stored struct {
	pruneRec
	m   archive.Message
	seq uint64
}

// pruneFixture is a bus with a registered community and a message store.
type pruneFixture struct {
	t   *testing.T
	b   *bus.Bus
	s   *messages.Store
	str jetstream.Stream
}

func newPruneFixture(t *testing.T) *pruneFixture {
	t.Helper()
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	if err := registry.New(b.Communities).Put(context.Background(), fixture.CommunityFromKey(pruneKey, 7*24*time.Hour, pruneDay0, pruneTopic)); err != nil {
		t.Fatal(err)
	}
	str, err := b.JS.Stream(context.Background(), bus.StreamMessages)
	if err != nil {
		t.Fatal(err)
	}
	return &pruneFixture{t: t, b: b, s: &messages.Store{Bus: b, Logger: testenv.Logger()}, str: str}
}

// put stores a message alone in its record and returns where.
func (f *pruneFixture) put(r pruneRec) stored {
	f.t.Helper()
	ctx := context.Background()
	size := 60
	if r.large {
		size = messages.InlinePayloadBytes + 1000
	}
	m := fixture.Messages{N: 1, From: r.ts, Topics: []archive.Topic{pruneTopic}, Signers: fixture.Signers(1), Size: size}.Make()[0]
	res, err := f.s.Ingest(ctx, pruneCom, []archive.Message{m})
	if err == nil && res.Stored+res.Late != 1 {
		f.t.Fatalf("ingest: %+v", res)
	}
	if err != nil {
		f.t.Fatal(err)
	}
	rm, err := f.str.GetLastMsgForSubject(ctx, messages.Subject(pruneCom, m.Timestamp, m.Hash))
	if err != nil {
		f.t.Fatal(err)
	}
	return stored{pruneRec: r, m: m, seq: rm.Sequence}
}

// held reports whether r's record is still in the stream and, for a large
// message, whether its payload object is.
func (f *pruneFixture) held(r stored) (held, body bool) {
	f.t.Helper()
	ctx := context.Background()
	_, err := f.str.GetMsg(ctx, r.seq)
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		f.t.Fatal(err)
	}
	held = err == nil
	if r.large {
		_, oerr := f.b.Objects.GetInfo(ctx, messages.PayloadObject(pruneCom, r.m.Hash, r.m.Payload))
		if oerr != nil && !errors.Is(oerr, jetstream.ErrObjectNotFound) {
			f.t.Fatal(oerr)
		}
		body = oerr == nil
	}
	return held, body
}

// heldWhole is held, failing the test unless a large message's payload
// object exists exactly when its record does.
func (f *pruneFixture) heldWhole(r stored) bool {
	f.t.Helper()
	held, body := f.held(r)
	if r.large && body != held {
		f.t.Errorf("record of %d (seq %d) held %v, its payload object %v", r.ts, r.seq, held, body)
	}
	return held
}

func fence(t *testing.T, f *pruneFixture) uint64 {
	t.Helper()
	seq, err := f.s.Fence(context.Background(), pruneCom)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// TestPrunerSchedules runs the Pruner on committed states: a state's records
// stay for its grace and go after it; a state committed while its
// community's prune is pending is pruned by the chain that prune starts; a
// late record is pruned once a state covers it. Switched off, it sets up
// nothing and removes nothing.
func TestPrunerSchedules(t *testing.T) {
	d := func(n uint64, h uint64) uint64 { return pruneDay0 + n*day + h*3600 }
	for _, tt := range []struct {
		name  string
		grace time.Duration
	}{{"on", 2 * time.Second}, {"off", Off}} {
		t.Run(tt.name, func(t *testing.T) {
			f := newPruneFixture(t)
			ctx, cancel := context.WithCancel(context.Background())
			reg := prometheus.NewRegistry()
			p := New(f.s, Config{Grace: tt.grace}, testenv.Logger(), reg)
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			t.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					t.Error(err)
				}
			})
			sts := &state.Store{KV: f.b.State}
			commit := func(end, seq uint64) time.Time {
				t.Helper()
				cur, rev, err := sts.GetBuild(ctx, pruneCom.String())
				if err != nil {
					t.Fatal(err)
				}
				next := &state.Build{LastEnd: end, Fence: cur.Fence + 1, BuiltAt: time.Now().UTC(), MessagesSeq: &seq}
				if _, err := sts.Put(ctx, pruneCom.String(), next, rev); err != nil {
					t.Fatal(err)
				}
				ev := bus.BuiltEvent{Community: pruneCom.String(), End: end, Fence: next.Fence}
				if _, err := f.b.Publish(ctx, bus.SubjectBuilt(pruneCom.String()), ev.MsgID(), ev); err != nil {
					t.Fatal(err)
				}
				return next.BuiltAt
			}
			await := func(what string, recs []stored, want bool) time.Time {
				t.Helper()
				deadline := time.Now().Add(20 * time.Second)
				for {
					all := true
					for _, r := range recs {
						// Polled while the pruner runs: a payload goes just
						// before its record, so only an object outliving its
						// record is wrong here; at rest, heldWhole checks both.
						held, body := f.held(r)
						if r.large && !held && body {
							t.Errorf("record of %d (seq %d) gone, its payload object held", r.ts, r.seq)
						}
						if held != want {
							all = false
						}
					}
					if all {
						for _, r := range recs {
							f.heldWhole(r)
						}
						return time.Now()
					}
					if time.Now().After(deadline) {
						t.Fatalf("%s: not every record held=%v after 20 s", what, want)
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
			var r []stored
			for _, ts := range []uint64{d(0, 1), d(1, 1), d(2, 1), d(3, 1)} {
				r = append(r, f.put(pruneRec{ts: ts, large: ts == d(0, 1)}))
			}
			at1 := commit(d(1, 0), fence(t, f))
			if tt.grace < 0 {
				time.Sleep(3 * time.Second)
				for _, x := range r {
					if !f.heldWhole(x) {
						t.Fatalf("pruning off, yet record %d was removed", x.ts)
					}
				}
				if _, err := f.b.JS.Stream(ctx, bus.StreamPrune); !errors.Is(err, jetstream.ErrStreamNotFound) {
					t.Fatalf("pruning off, yet stream %s: %v", bus.StreamPrune, err)
				}
				return
			}
			time.Sleep(time.Second)
			if !f.heldWhole(r[0]) {
				t.Fatal("a record went before its state's grace ended")
			}
			gone := await("first state", r[:1], false)
			if lag := gone.Sub(at1); lag < tt.grace || lag > tt.grace+5*time.Second {
				t.Errorf("first state's records went %v after its commit, grace %v", lag, tt.grace)
			}
			await("open windows", r[1:], true)

			// Two states in a row: the second is committed while the first's
			// prune is pending and is not due when that fires (the fired
			// prune schedules it), and a late record comes between them.
			commit(d(2, 0), fence(t, f))
			time.Sleep(1200 * time.Millisecond)
			late := f.put(pruneRec{ts: d(0, 7)})
			commit(d(3, 0), fence(t, f))
			await("chained states", []stored{r[1], r[2], late}, false)
			await("open window", r[3:], true)
			if v := testutil.ToFloat64(p.metrics.records.WithLabelValues("purge")) + testutil.ToFloat64(p.metrics.records.WithLabelValues("delete")); v != 4 {
				t.Errorf("archivefleet_messages_pruned_total = %v, want 4", v)
			}
			if v := testutil.ToFloat64(p.metrics.prunes.WithLabelValues(pruneResultPruned)); v != 3 {
				t.Errorf("%v prunes removed records, want 3 (one per state)", v)
			}
			if v := testutil.ToFloat64(p.metrics.bodies); v != 1 {
				t.Errorf("archivefleet_message_payloads_pruned_total = %v, want 1", v)
			}
			str, _ := f.b.JS.Stream(ctx, bus.StreamPrune)
			if info, _ := str.Info(ctx, jetstream.WithSubjectFilter(">")); info.State.Msgs != 0 {
				t.Errorf("%s holds %v once every prune ran, want nothing", bus.StreamPrune, info.State.Subjects)
			}
		})
	}
}
