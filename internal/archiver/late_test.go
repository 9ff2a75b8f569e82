package archiver

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/lock"
	"github.com/archivefleet/archivefleet/internal/messages"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// TestLateMessagesGoIntoSupplements races ingest against builds: messages
// for a window that is being built or already built are stored and archived
// by the next build as supplements, and every message ingested ends up in
// exactly one archive, with earlier index entries unchanged.
func TestLateMessagesGoIntoSupplements(t *testing.T) {
	ctx := context.Background()
	key := fixture.Key()
	com := fixture.CommunityFromKey(key, time.Hour, uint64(time.Now().Unix())-10*3600, archive.Topic{1, 2, 3, 4})
	s, st := newBuildService(t, com)

	var mu sync.Mutex
	ingested := map[string]bool{}
	ingest := func(from, to uint64, n int) messages.IngestResult {
		msgs := fixture.Messages{N: n, From: from, To: to, Topics: com.Topics[:1], Signers: [][]byte{fixture.Signer(key)}, Size: 100}.Make()
		res, err := st.Ingest(ctx, com.ID, msgs)
		if err != nil || res.Stored+res.Late != n {
			t.Errorf("ingest: %+v %v", res, err)
		}
		mu.Lock()
		for _, m := range msgs {
			ingested[string(m.Hash)] = true
		}
		mu.Unlock()
		return res
	}
	build := func(end uint64, fence int64) {
		t.Helper()
		if _, err := s.build(ctx, s.Logger, com, bus.DueEvent{Community: com.ID.String(), End: end}, fence); err != nil {
			t.Fatalf("build to %d: %v", end, err)
		}
	}
	h := uint64(3600)
	ingest(com.Since, com.Since+4*h, 200)
	build(com.Since+4*h, 1)
	oldIndex := readIndex(t, s, com.ID)

	// Late messages for the first and third hour, and messages for the next
	// window, while builds run.
	if c := ingest(com.Since+5, com.Since+h, 30); c.Late != 30 {
		t.Fatalf("%d of 30 messages for a built window answered late", c.Late)
	}
	ingest(com.Since+2*h+10, com.Since+3*h, 20)
	ingest(com.Since+4*h, com.Since+6*h, 100)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := uint64(0); i < 10; i++ {
			ingest(com.Since+i*h/2, com.Since+7*h, 10) // some in windows being built, some late
		}
	}()
	build(com.Since+6*h, 2)
	wg.Wait()
	cur, _, _ := s.State.GetBuild(ctx, com.ID.String())
	if cur.LateMessages < 50 {
		t.Fatalf("second build archived %d late messages, want at least the 50 sent before it", cur.LateMessages)
	}
	if idx := readIndex(t, s, com.ID); !bytes.HasPrefix(idx, oldIndex) {
		t.Fatal("earlier index entries changed")
	}
	build(com.Since+8*h, 3)
	build(com.Since+9*h, 4) // nothing new: no supplement

	msgs, ix := extract(t, s, com.ID)
	seen := map[string]int{}
	for _, m := range msgs {
		seen[string(m.Hash)]++
	}
	for h := range ingested {
		if seen[h] != 1 {
			t.Errorf("message %x is in %d archives, want 1", h, seen[h])
		}
	}
	if len(msgs) != len(ingested) {
		t.Fatalf("archives hold %d messages, %d were ingested", len(msgs), len(ingested))
	}
	sups := 0
	for _, e := range ix.Entries {
		if e.To-e.From == h && e.From < com.Since+4*h && e.Offset > 0 {
			sups++
		}
	}
	if sups < 2 {
		t.Fatalf("%d supplement entries for the first build's windows, want at least 2", sups)
	}
	if v := testutil.ToFloat64(s.metrics.leftOut); v != 0 {
		t.Fatalf("%v messages left out of every archive", v)
	}
	t.Logf("%d messages ingested, %d archived, %d index entries, %d supplements for the first build's windows",
		len(ingested), len(msgs), len(ix.Entries), sups)
}

// newBuildService registers com on a fresh embedded NATS and returns an
// archiver that builds from the real message store, and that messages.
func newBuildService(t *testing.T, com *registry.Community) (*Service, *messages.Store) {
	t.Helper()
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	reg := registry.New(b.Communities)
	if err := reg.Put(context.Background(), com); err != nil {
		t.Fatal(err)
	}
	st := &messages.Store{Bus: b}
	s := New(Service{Bus: b, Registry: reg, State: &state.Store{KV: b.State}, Sources: st, Locker: lock.NewLocal(),
		Config: Config{WorkDir: t.TempDir(), AnnounceList: [][]string{}}, Logger: testenv.Logger()}, prometheus.NewRegistry())
	return s, st
}

func readIndex(t *testing.T, s *Service, c archive.CommunityID) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.layout().ArchiveDir(c), archive.IndexFile))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func extract(t *testing.T, s *Service, c archive.CommunityID) ([]archive.Message, *archive.Index) {
	t.Helper()
	msgs, ix, err := fixture.ReadFolder(s.layout().ArchiveDir(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	return msgs, ix
}
