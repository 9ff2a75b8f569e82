package messages

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

const pruneDay0 = 1_700_006_400 // a UTC midnight

var (
	pruneKey      = bytes.Repeat([]byte{9}, 32)
	pruneCom      = fixture.ID(pruneKey)
	pruneOtherKey = bytes.Repeat([]byte{10}, 32)
	pruneOther    = fixture.ID(pruneOtherKey)
	pruneTopic    = archive.Topic{5}
)

// pruneRec is one record a prune test stores, in storage order.
type pruneRec struct {
	ts     uint64
	after  bool  // stored after the watermark (and so after every record before it): not archived yet
	large  bool  // payload in the object store
	legacy bool  // a JSON record of earlier versions on msgs.<c>.<day>, no timestamp header
	onDay  int64 // >0: stored on this day's subject although its timestamp is elsewhere
	other  bool  // another community's
}

// pruneFixture is a bus with two registered communities and a store.
type pruneFixture struct {
	t   *testing.T
	b   *bus.Bus
	s   *Store
	str jetstream.Stream
}

func newPruneFixture(t *testing.T) *pruneFixture {
	t.Helper()
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	for _, k := range [][]byte{pruneKey, pruneOtherKey} {
		if err := registry.New(b.Communities).Put(context.Background(), fixture.CommunityFromKey(k, 7*24*time.Hour, pruneDay0, pruneTopic)); err != nil {
			t.Fatal(err)
		}
	}
	str, err := b.JS.Stream(context.Background(), bus.StreamMessages)
	if err != nil {
		t.Fatal(err)
	}
	return &pruneFixture{t: t, b: b, s: &Store{Bus: b, Logger: testenv.Logger()}, str: str}
}

// stored is a record as written: its message, community and stream sequence.
type stored struct {
	pruneRec
	m   archive.Message
	c   archive.CommunityID
	seq uint64
}

// put stores r and returns where.
func (f *pruneFixture) put(r pruneRec) stored {
	f.t.Helper()
	ctx := context.Background()
	size := 60
	if r.large {
		size = InlinePayloadBytes + 1000
	}
	m := fixture.Messages{N: 1, From: r.ts, Topics: []archive.Topic{pruneTopic}, Signers: fixture.Signers(1), Size: size}.Make()[0]
	c := pruneCom
	if r.other {
		c = pruneOther
	}
	var ack *jetstream.PubAck
	var err error
	switch {
	case r.legacy:
		j, _ := json.Marshal(m)
		ack, err = f.b.JS.Publish(ctx, bus.SubjectMessagesLegacy(c.String(), r.ts/day), j)
	case r.onDay > 0:
		data, _ := m.MarshalBinary()
		msg := nats.NewMsg(fmt.Sprintf("msgs.%s.%d.%s", c, r.onDay, hex.EncodeToString(m.Hash)))
		msg.Header.Set(headerTimestamp, strconv.FormatUint(m.Timestamp, 10))
		msg.Data = data
		ack, err = f.b.JS.PublishMsg(ctx, msg)
	default:
		var res IngestResult
		res, err = f.s.Ingest(ctx, c, []archive.Message{m})
		if err == nil && res.Stored+res.Late != 1 {
			err = fmt.Errorf("ingest: %+v", res)
		}
		if err == nil {
			var rm *jetstream.RawStreamMsg
			rm, err = f.str.GetLastMsgForSubject(ctx, Subject(c, m.Timestamp, m.Hash))
			if err == nil {
				ack = &jetstream.PubAck{Sequence: rm.Sequence}
			}
		}
	}
	if err != nil {
		f.t.Fatal(err)
	}
	if r.legacy || r.onDay > 0 {
		markLegacy(f.t, f.b, f.s)
	}
	return stored{pruneRec: r, m: m, c: c, seq: ack.Sequence}
}

// held reports whether record r is still in the stream and, for a large
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
		_, oerr := f.b.Objects.GetInfo(ctx, PayloadObject(r.c, r.m.Hash, r.m.Payload))
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

// archived is the oracle: whether a cutoff ending at end says record r
// (stored before the watermark unless r.after) is archived.
func archived(r stored, end uint64) bool {
	switch {
	case r.after || r.other || r.onDay > 0:
		return false // after the watermark, another community, never read by a build
	case r.legacy:
		return (r.ts/day+1)*day <= end // no timestamp header: only a whole day is known
	}
	return r.ts < end
}

// TestPrune stores records around a cutoff and prunes: exactly the records
// the cutoff archived go, with their payload objects; a second prune removes
// nothing more.
func TestPrune(t *testing.T) {
	d := func(n uint64, h uint64) uint64 { return pruneDay0 + n*day + h*3600 }
	tests := []struct {
		name string
		end  uint64
		recs []pruneRec
	}{
		{"end on a day boundary", d(2, 0), []pruneRec{{ts: d(0, 1)}, {ts: d(0, 23)}, {ts: d(1, 5)}, {ts: d(2, 0)}, {ts: d(2, 7)}, {ts: d(3, 1)}}},
		{"day straddling the end keeps the open window", d(1, 10), []pruneRec{
			{ts: d(0, 3)}, {ts: d(1, 2)}, {ts: d(1, 9)}, {ts: d(1, 11)}, {ts: d(1, 20)}, {ts: d(2, 1)}}},
		{"straddling day stored out of order", d(1, 10), []pruneRec{
			{ts: d(1, 12)}, {ts: d(1, 1)}, {ts: d(1, 15)}, {ts: d(1, 9)}, {ts: d(0, 4)}, {ts: d(1, 3)}}},
		{"late records after the watermark stay", d(2, 6), []pruneRec{
			{ts: d(0, 1)}, {ts: d(1, 1)}, {ts: d(2, 7)}, {ts: d(1, 2)}, {ts: d(0, 5), after: true}, {ts: d(2, 1), after: true}}},
		{"large payloads go with their records", d(1, 12), []pruneRec{
			{ts: d(0, 1), large: true}, {ts: d(1, 11), large: true}, {ts: d(1, 13), large: true}, {ts: d(0, 2), large: true, after: true}}},
		{"records of earlier versions", d(1, 12), []pruneRec{
			{ts: d(0, 1), legacy: true}, {ts: d(0, 9)}, {ts: d(1, 1), legacy: true}, {ts: d(1, 13), legacy: true}}},
		{"timestamp off its subject's day stays", d(3, 0), []pruneRec{{ts: d(0, 1), onDay: int64(pruneDay0/day + 1)}, {ts: d(1, 1)}}},
		{"another community is untouched", d(2, 0), []pruneRec{{ts: d(0, 1)}, {ts: d(0, 2), other: true}, {ts: d(1, 2), other: true}}},
		{"nothing archived yet", d(0, 0), []pruneRec{{ts: d(0, 1)}, {ts: d(1, 1)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newPruneFixture(t)
			ctx := context.Background()
			var recs []stored
			var seq uint64
			fenced := false
			for _, r := range tt.recs {
				if r.after && !fenced {
					seq, fenced = fence(t, f), true
				}
				recs = append(recs, f.put(r))
			}
			if !fenced {
				seq = fence(t, f)
			}
			cut := Cutoff{End: tt.end, Seq: seq, BuiltAt: time.Now()}
			st, err := f.s.Prune(ctx, pruneCom, cut)
			if err != nil {
				t.Fatal(err)
			}
			removed := 0
			for _, r := range recs {
				want := !archived(r, tt.end)
				if got := f.heldWhole(r); got != want {
					t.Errorf("record ts %d (day %d h %d, %+v): held %v, want %v", r.ts, (r.ts-pruneDay0)/day, r.ts%day/3600, r.pruneRec, got, want)
				}
				if !want {
					removed++
				}
			}
			if st.Records != removed {
				t.Errorf("stats say %d records removed, %d were: %+v", st.Records, removed, st)
			}
			again, err := f.s.Prune(ctx, pruneCom, cut)
			if err != nil || again.Records != 0 || again.Bodies != 0 {
				t.Fatalf("second prune: %+v %v, want nothing removed", again, err)
			}
			t.Logf("%+v", st)
		})
	}
}

func fence(t *testing.T, f *pruneFixture) uint64 {
	t.Helper()
	seq, err := f.s.Fence(context.Background(), pruneCom)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// TestPruneCrashMidway stops a prune before each of its steps in turn, as a
// crash would, and runs it again: the second run finishes it, and no payload
// object outlives its record at any point.
func TestPruneCrashMidway(t *testing.T) {
	d := func(n uint64, h uint64) uint64 { return pruneDay0 + n*day + h*3600 }
	recs := []pruneRec{{ts: d(0, 1), large: true}, {ts: d(0, 2)}, {ts: d(1, 12), large: true}, {ts: d(1, 2), large: true},
		{ts: d(1, 3)}, {ts: d(1, 4), large: true}, {ts: d(2, 1)}}
	end := d(1, 6)
	crash := errors.New("crash")
	for k := 1; ; k++ {
		f := newPruneFixture(t)
		var held []stored
		for _, r := range recs {
			held = append(held, f.put(r))
		}
		cut := Cutoff{End: end, Seq: fence(t, f), BuiltAt: time.Now()}
		steps := 0
		pruneHook = func(string) error {
			if steps++; steps == k {
				return crash
			}
			return nil
		}
		_, err := f.s.Prune(context.Background(), pruneCom, cut)
		pruneHook = nil
		for _, r := range held {
			if rec, body := f.held(r); body && !rec {
				t.Fatalf("crash before step %d: the payload object of %d outlived its record", k, r.ts)
			}
		}
		if err == nil {
			t.Logf("a prune takes %d steps; each crash point finished by the next run", steps)
			return
		}
		if !errors.Is(err, crash) {
			t.Fatal(err)
		}
		if _, err := f.s.Prune(context.Background(), pruneCom, cut); err != nil {
			t.Fatal(err)
		}
		for _, r := range held {
			if got, want := f.heldWhole(r), !archived(r, end); got != want {
				t.Fatalf("crash before step %d, then a prune: record ts %d held %v, want %v", k, r.ts, got, want)
			}
		}
		objs, err := f.b.Objects.List(context.Background())
		if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
			t.Fatal(err)
		}
		bodies := 0
		for _, o := range objs {
			if strings.HasPrefix(o.Name, "messages/") {
				bodies++
			}
		}
		if bodies != 1 {
			t.Fatalf("crash before step %d: %d payload objects left, want 1 (the open window's)", k, bodies)
		}
	}
}

// TestPruneRefusesStaleCutoff: a watermark from another stream (recreated,
// or past its end) removes nothing.
func TestPruneRefusesStaleCutoff(t *testing.T) {
	f := newPruneFixture(t)
	r := f.put(pruneRec{ts: pruneDay0 + 10})
	seq := fence(t, f)
	for _, cut := range []Cutoff{
		{End: pruneDay0 + day, Seq: seq + 100, BuiltAt: time.Now()},
		{End: pruneDay0 + day, Seq: seq, BuiltAt: time.Now().Add(-time.Hour)},
	} {
		if _, err := f.s.Prune(context.Background(), pruneCom, cut); !errors.Is(err, ErrStaleCutoff) {
			t.Fatalf("cutoff %+v: %v, want ErrStaleCutoff", cut, err)
		}
		if !f.heldWhole(r) {
			t.Fatal("a stale cutoff removed a record")
		}
	}
}

// TestPruneConcurrent runs two prunes of the same cutoff at once (a fired
// prune and a redelivery, say): both succeed and together remove exactly
// what one would.
func TestPruneConcurrent(t *testing.T) {
	d := func(n uint64, h uint64) uint64 { return pruneDay0 + n*day + h*3600 }
	f := newPruneFixture(t)
	var recs []stored
	for i := range 40 {
		// A straddling day stored out of order (before and after the end
		// alternate): most records go one by one.
		h := uint64(11 + i%3)
		if i%2 == 1 {
			h -= 10
		}
		recs = append(recs, f.put(pruneRec{ts: d(1, h), large: i%10 == 0}))
	}
	cut := Cutoff{End: d(1, 10), Seq: fence(t, f), BuiltAt: time.Now()}
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := f.s.Prune(context.Background(), pruneCom, cut)
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range recs {
		if got, want := f.heldWhole(r), !archived(r, cut.End); got != want {
			t.Fatalf("record ts %d held %v, want %v", r.ts, got, want)
		}
	}
}
