package fleet

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/messages"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// TestDemoArchivesEveryMessage runs the all-in-one demo (embedded NATS, every
// service) for at least six windows while this test ingests batches racing
// each window boundary: just before it, at it, inside the settle time and
// just after the build started. Then it checks by hash, on what the fleet
// committed, that every message ingested — the test's and the demo's own —
// is in exactly one archive.
func TestDemoArchivesEveryMessage(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the fleet for about 20 s")
	}
	cfg := DefaultAllInOneConfig()
	cfg.DataDir, cfg.NATSPort, cfg.HTTPAddr = t.TempDir(), testenv.FreePort(t), "127.0.0.1:0"
	cfg.DemoEvery, cfg.Tick, cfg.Republish, cfg.LogLevel = 2*time.Second, 50*time.Millisecond, 0, "warn"
	cfg.logOut = io.Discard
	if testing.Verbose() {
		cfg.logOut = os.Stderr
	}
	ctx := startAllInOne(t, cfg)

	var b *bus.Bus
	var com *registry.Community
	for deadline := time.Now().Add(30 * time.Second); com == nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no demo community registered")
		}
		if b == nil {
			nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", cfg.NATSPort))
			if err != nil {
				continue
			}
			t.Cleanup(nc.Close)
			if b, err = bus.Setup(ctx, nc, cfg.BusConfig()); err != nil {
				t.Fatal(err)
			}
		}
		if coms, err := registry.New(b.Communities).List(ctx); err == nil && len(coms) == 1 {
			com = coms[0]
		}
	}
	iv := uint64(cfg.DemoEvery / time.Second)
	settle := cfg.settle()
	t.Logf("demo community %s, interval %v, settle %v", com.ID, cfg.DemoEvery, settle)

	// Race every boundary of the next six windows.
	var mu sync.Mutex
	mine := map[string]bool{}
	counts := map[string]int{}
	send := func(from, to uint64) {
		msgs := fixture.Messages{N: 5, From: from, To: to, Random: true, Topics: com.Topics[:1], Size: 120}.Make()
		res := ingestNATS(t, b, com, msgs)
		if res.Refused+res.Failed != 0 || res.Stored+res.Late != len(msgs) {
			t.Errorf("ingest at a boundary: %+v", res)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, m := range msgs {
			mine[string(m.Hash)] = true
		}
		counts["stored"] += res.Stored
		counts["late"] += res.Late
	}
	now := uint64(time.Now().Unix())
	first := com.Since + ((now-com.Since)/iv+1)*iv
	const windows = 6
	for k := uint64(0); k < windows; k++ {
		boundary := time.Unix(int64(first+k*iv), 0)
		for _, off := range []time.Duration{-30 * time.Millisecond, 0, settle / 2, settle - 5*time.Millisecond,
			settle + 10*time.Millisecond, settle + 60*time.Millisecond} {
			time.Sleep(time.Until(boundary.Add(off)))
			w := first + k*iv
			send(w-iv, w) // the window closing at this boundary
		}
	}
	last := first + (windows-1)*iv

	// Wait for a build that read the store after the last ingest: its
	// watermark covers every message above, late ones included.
	st := &state.Store{KV: b.State}
	var final *state.Build
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		cur, _, err := st.GetBuild(ctx, com.ID.String())
		if err != nil {
			t.Fatal(err)
		}
		if cur.LastEnd >= last+2*iv && cur.MessagesSeq != nil {
			final = cur
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fleet not built past %d (at %d)", last+2*iv, cur.LastEnd)
		}
	}

	archived := committedMessages(t, b, com.ID, final)
	inArchives := map[string]int{}
	for _, m := range archived {
		inArchives[string(m.Hash)]++
	}
	for h, n := range inArchives {
		if n != 1 {
			t.Errorf("message %x is in %d archives", h, n)
		}
	}
	for h := range mine {
		if inArchives[h] != 1 {
			t.Errorf("message %x ingested at a boundary is in %d archives, want 1", h, inArchives[h])
		}
	}
	// Every stored message the final build's watermark covers — the demo's
	// too — whose window it built, read straight from the stream.
	stored := 0
	readStream(t, b, com.ID, *final.MessagesSeq, func(m archive.Message) {
		if m.Timestamp >= final.LastEnd {
			return
		}
		stored++
		if inArchives[string(m.Hash)] != 1 {
			t.Errorf("stored message %x at %d is in %d archives, want 1", m.Hash, m.Timestamp, inArchives[string(m.Hash)])
		}
	})
	if stored != len(archived) {
		t.Errorf("%d stored messages in built windows, %d archived", stored, len(archived))
	}
	t.Logf("%d messages stored in built windows (%d by this test at boundaries: %d answered stored, %d late), %d archived once each, %d late messages in the last build's supplements",
		stored, len(mine), counts["stored"], counts["late"], len(archived), final.LateMessages)
}

// committedMessages reads every archive the committed state st lists, from
// the object store, as a member would read the torrent's files.
func committedMessages(t *testing.T, b *bus.Bus, c archive.CommunityID, st *state.Build) []archive.Message {
	t.Helper()
	ctx := context.Background()
	cm, err := state.FetchCommitted(ctx, b, c.String(), st)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, archive.DataFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := state.FetchArchives(ctx, b, c.String(), st.Archives, 0, f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.WriteFile(filepath.Join(dir, archive.IndexFile), cm.Index, 0o644); err != nil {
		t.Fatal(err)
	}
	msgs, _ := readFolder(t, dir, nil)
	return msgs
}

// readStream decodes every record of community c in the message stream up
// to sequence upto, without the store package.
func readStream(t *testing.T, b *bus.Bus, c archive.CommunityID, upto uint64, fn func(archive.Message)) {
	t.Helper()
	ctx := context.Background()
	cons, err := b.JS.OrderedConsumer(ctx, bus.StreamMessages, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"msgs." + c.String() + ".>"}})
	if err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second))
		if err != nil {
			t.Fatalf("read stream: %v", err)
		}
		meta, _ := msg.Metadata()
		if meta.Sequence.Stream > upto {
			return
		}
		if !strings.HasSuffix(msg.Subject(), ".fence") { // builds' fences carry no message
			ms, err := messages.RecordMessages(msg.Subject(), msg.Headers(), msg.Data())
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range ms {
				fn(m)
			}
		}
		if meta.NumPending == 0 {
			return
		}
	}
}
