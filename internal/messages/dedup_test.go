package messages

import (
	"context"
	"encoding/hex"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// TestRacingWritersStoreOnce: four ingesters (as four processes: each its
// own Store and index) send the same 2,000 messages at once, in different
// orders and batches; every message is stored once and each writer learns
// of it as stored or duplicate.
func TestRacingWritersStoreOnce(t *testing.T) {
	ns := testenv.NATS(t)
	b := testenv.Bus(t, ns, bus.Config{})
	now := uint64(time.Now().Unix())
	register(t, b, now-2*day)
	msgs := fixture.Messages{N: 2000, From: now - 2*day, To: now, Topics: []archive.Topic{topic}, Signers: signers, Size: 20}.Make()
	var wg sync.WaitGroup
	totals := make([]IngestResult, 4)
	for w := range 4 {
		s := &Store{Bus: testenv.Bus(t, ns, bus.Config{}), DedupMemory: 1 << 20 * (w + 1)}
		wg.Go(func() {
			order := append([]archive.Message(nil), msgs...)
			if w%2 == 1 {
				for i, j := 0, len(order)-1; i < j; i, j = i+1, j-1 {
					order[i], order[j] = order[j], order[i]
				}
			}
			for start := 0; start < len(order); start += 100 * (w + 1) {
				res, err := s.Ingest(context.Background(), community, order[start:min(start+100*(w+1), len(order))])
				if err != nil {
					t.Error(err)
					return
				}
				totals[w].Stored += res.Stored
				totals[w].Duplicates += res.Duplicates
				totals[w].Late += res.Late
				totals[w].Failed += res.Failed + res.Refused + res.Conflicts
			}
		})
	}
	wg.Wait()
	stored := 0
	for w, r := range totals {
		if r.Failed != 0 || r.Stored+r.Duplicates+r.Late != len(msgs) {
			t.Errorf("writer %d: %+v", w, r)
		}
		stored += r.Stored + r.Late
	}
	if stored != len(msgs) {
		t.Errorf("%d stored in all, want %d", stored, len(msgs))
	}
	s := &Store{Bus: b}
	got := collect(t, s.Source(community), now-3*day, now+1)
	if len(got) != len(msgs) {
		t.Fatalf("read back %d messages, want %d", len(got), len(msgs))
	}
	info, err := b.JS.Stream(context.Background(), bus.StreamMessages)
	if err != nil {
		t.Fatal(err)
	}
	if st := info.CachedInfo().State; st.Msgs > uint64(len(msgs)) || st.NumSubjects > 3 {
		t.Fatalf("stream holds %d records on %d subjects, want at most %d records (messages share them) on at most %d subjects",
			st.Msgs, st.NumSubjects, len(msgs), 3)
	}
}

// TestDedupIndexEvicts: past its memory the index drops buckets, and a
// dropped bucket is read again, so duplicates are still found.
func TestDedupIndexEvicts(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	now := uint64(time.Now().Unix())
	register(t, b, now-10*day)
	s := &Store{Bus: b, DedupMemory: 100 * indexEntryCost}
	msgs := fixture.Messages{N: 1000, From: now - 10*day, To: now, Topics: []archive.Topic{topic}, Signers: signers, Size: 20}.Make()
	ctx := context.Background()
	if res, err := s.Ingest(ctx, community, msgs); err != nil || res.Stored != len(msgs) {
		t.Fatal(res, err)
	}
	d := s.dedup()
	d.mu.Lock()
	held, cost := len(d.buckets), d.cost
	d.mu.Unlock()
	if cost > 100*indexEntryCost+indexEntryCost*1000 || held >= 10 {
		t.Fatalf("index holds %d buckets costing %d bytes", held, cost)
	}
	if res, err := s.Ingest(ctx, community, msgs); err != nil || res.Duplicates != len(msgs) {
		t.Fatalf("sent again: %+v %v", res, err)
	}
}

// TestEarlierLayoutIsChecked: a day holding records of the per-message
// layout (the version before buckets) is checked message by message, so a
// message stored by that version is a duplicate (or a conflict), not a
// second copy.
func TestEarlierLayoutIsChecked(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	now := uint64(time.Now().Unix())
	register(t, b, now-day)
	ctx := context.Background()
	old := fixture.Messages{N: 3, From: now - 60, Topics: []archive.Topic{topic}, Signers: signers}.Make()
	for _, m := range old {
		data, _ := m.MarshalBinary()
		msg := nats.NewMsg(bus.SubjectMessagesLegacy(community.String(), m.Timestamp/day) + "." + hex.EncodeToString(m.Hash))
		msg.Data = data
		msg.Header.Set(headerTimestamp, strconv.FormatUint(m.Timestamp, 10))
		if _, err := b.JS.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(0)); err != nil {
			t.Fatal(err)
		}
	}
	s := &Store{Bus: b}
	markLegacy(t, b, s)
	forged := old[2]
	forged.Payload = []byte("other")
	fresh := fixture.Messages{N: 1, From: now - 30, Topics: []archive.Topic{topic}, Signers: signers}.Make()[0]
	res, err := s.Ingest(ctx, community, []archive.Message{old[0], old[1], forged, fresh})
	if err != nil {
		t.Fatal(err)
	}
	if res.Duplicates != 2 || res.Conflicts != 1 || res.Stored != 1 {
		t.Fatalf("%+v: want the two old ones duplicates, the forged one a conflict, the new one stored", res)
	}
	if got := collect(t, s.Source(community), now-day, now+1); len(got) != 4 {
		t.Fatalf("read %d messages, want 4", len(got))
	}
}
