package bus_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// readStream makes stream S with n records on subjects a.<i%3> and returns
// the bus.
func readStream(t *testing.T, n int) *bus.Bus {
	t.Helper()
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{Memory: true})
	ctx := context.Background()
	if _, err := b.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"a.*"}, AllowDirect: true,
		Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := b.JS.Publish(ctx, fmt.Sprintf("a.%d", i%3), []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func TestRead(t *testing.T) {
	b := readStream(t, 3000)
	cases := []struct {
		name  string
		r     bus.Read
		first uint64
		n     int
	}{
		{"one subject", bus.Read{Filter: "a.1"}, 2, 1000},
		{"wildcard", bus.Read{Filter: "a.*"}, 1, 3000},
		{"from", bus.Read{Filter: "a.*", From: 2001}, 2001, 1000},
		{"bounded", bus.Read{Filter: "a.2", Upto: 300}, 3, 100},
		{"small batches", bus.Read{Filter: "a.0", Batch: 7, MaxBytes: 100}, 1, 1000},
		{"nothing", bus.Read{Filter: "a.9"}, 0, 0},
		{"past the end", bus.Read{Filter: "a.*", From: 5000}, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.r.Stream = "S"
			var seqs []uint64
			last, err := b.Read(context.Background(), c.r, func(r *bus.Record) error {
				if want := strconv.FormatUint(r.Seq-1, 10); string(r.Data) != want {
					return fmt.Errorf("record %d holds %q", r.Seq, r.Data)
				}
				seqs = append(seqs, r.Seq)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(seqs) != c.n || c.n > 0 && (seqs[0] != c.first || last != seqs[len(seqs)-1]) {
				t.Fatalf("%d records, first %v, last %d", len(seqs), seqs[:min(1, len(seqs))], last)
			}
			for i := 1; i < len(seqs); i++ {
				if seqs[i] <= seqs[i-1] {
					t.Fatalf("out of order at %d: %d after %d", i, seqs[i], seqs[i-1])
				}
			}
		})
	}
	// StopRead ends it early without an error.
	n := 0
	if _, err := b.Read(context.Background(), bus.Read{Stream: "S", Filter: "a.*"}, func(*bus.Record) error {
		if n++; n == 10 {
			return bus.StopRead
		}
		return nil
	}); err != nil || n != 10 {
		t.Fatalf("stopped after %d: %v", n, err)
	}
}

// TestReadPastLaggingReplica: the stream's direct gets answered by a
// replica whose log ends before the bound (here a responder under another
// API prefix, which passes requests to S but cuts every answer at a prefix
// of the log, as a replica behind the leader would). A bounded read goes
// on with what the leader holds; an unbounded one takes what it got.
func TestReadPastLaggingReplica(t *testing.T) {
	b := readStream(t, 3000)
	var behind atomic.Uint64 // the replica's last sequence; grows as it catches up
	behind.Store(500)
	var asked atomic.Int64
	ctx := context.Background()
	// Direct gets on S under another API prefix: S's answers cut at the
	// replica's last sequence.
	lag := *b
	lag.APIPrefix = "$LAG.API"
	sub, err := b.NC.Subscribe("$LAG.API.DIRECT.GET.S", func(m *nats.Msg) {
		asked.Add(1)
		var req struct {
			Seq     uint64 `json:"seq"`
			NextFor string `json:"next_by_subj"`
			Batch   int    `json:"batch"`
		}
		json.Unmarshal(m.Data, &req)
		sent, lseq := 0, uint64(0)
		last := behind.Load()
		b.Read(ctx, bus.Read{Stream: "S", Filter: req.NextFor, From: req.Seq, Upto: last}, func(r *bus.Record) error {
			out := nats.NewMsg(m.Reply)
			out.Data = r.Data
			out.Header.Set(jetstream.SubjectHeader, r.Subject)
			out.Header.Set(jetstream.SequenceHeader, strconv.FormatUint(r.Seq, 10))
			m.RespondMsg(out)
			if sent, lseq = sent+1, r.Seq; sent == req.Batch {
				return bus.StopRead
			}
			return nil
		})
		end := nats.NewMsg(m.Reply)
		if sent == 0 {
			end.Header.Set("Status", "404")
		} else {
			end.Header.Set("Status", "204")
			end.Header.Set("Nats-Num-Pending", "0")
			end.Header.Set("Nats-Last-Sequence", strconv.FormatUint(lseq, 10))
		}
		m.RespondMsg(end)
		behind.Add(700) // catching up
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	// The leader is S's.
	lsub, err := b.NC.Subscribe("$LAG.API.STREAM.MSG.GET.S", func(m *nats.Msg) {
		resp, err := b.NC.Request("$JS.API.STREAM.MSG.GET.S", m.Data, 5*time.Second)
		if err == nil {
			m.Respond(resp.Data)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer lsub.Unsubscribe()
	count := func(r bus.Read) int {
		n := 0
		if _, err := lag.Read(ctx, r, func(*bus.Record) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(bus.Read{Stream: "S", Filter: "a.*", Upto: 2500}); n != 2500 {
		t.Fatalf("bounded read: %d records, want 2500", n)
	}
	if asked.Load() < 2 {
		t.Fatalf("the replica was asked %d times", asked.Load())
	}
	behind.Store(500)
	if n := count(bus.Read{Stream: "S", Filter: "a.*"}); n != 500 {
		t.Fatalf("unbounded read: %d records, want what the replica held (500)", n)
	}
}
