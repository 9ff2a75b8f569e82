package archiver

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/lock"
	"github.com/archivefleet/archivefleet/internal/messages"
	"github.com/archivefleet/archivefleet/internal/pruner"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// pruneEnv is an archiver building several communities from one real message
// store, with the message pruner running beside it.
type pruneEnv struct {
	t    *testing.T
	b    *bus.Bus
	s    *Service
	st   *messages.Store
	p    *pruner.Pruner
	coms []*registry.Community
	keys [][]byte
	// fence counts each community's builds: the fence of the next one.
	fence map[string]int64
}

func newPruneEnv(t *testing.T, grace time.Duration, coms int, interval time.Duration, since uint64) *pruneEnv {
	t.Helper()
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	e := &pruneEnv{t: t, b: b, fence: map[string]int64{}}
	reg := registry.New(b.Communities)
	for range coms {
		key := fixture.Key()
		com := fixture.CommunityFromKey(key, interval, since, archive.Topic{1, 2, 3, 4})
		if err := reg.Put(context.Background(), com); err != nil {
			t.Fatal(err)
		}
		e.coms, e.keys = append(e.coms, com), append(e.keys, key)
	}
	e.st = &messages.Store{Bus: b, Logger: testenv.Logger()}
	e.s = New(Service{Bus: b, Registry: reg, State: &state.Store{KV: b.State}, Sources: e.st, Locker: lock.NewLocal(),
		Config: Config{WorkDir: t.TempDir(), AnnounceList: [][]string{}}, Logger: testenv.Logger()}, prometheus.NewRegistry())
	e.p = pruner.New(e.st, pruner.Config{Grace: grace}, testenv.Logger(), prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return e
}

// ingest stores n messages of community i with timestamps in [from, to) and
// returns them, checking every one was kept with the outcome want.
func (e *pruneEnv) ingest(i, n int, from, to uint64, want messages.Outcome) []archive.Message {
	e.t.Helper()
	msgs := fixture.Messages{N: n, From: from, To: to, Random: true, Topics: e.coms[i].Topics[:1],
		Signers: [][]byte{fixture.Signer(e.keys[i])}, Size: 120}.Make()
	return e.ingestAgain(i, msgs, want)
}

// ingestAgain stores msgs for community i (sent before, or new).
func (e *pruneEnv) ingestAgain(i int, msgs []archive.Message, want messages.Outcome) []archive.Message {
	e.t.Helper()
	res, err := e.st.Ingest(context.Background(), e.coms[i].ID, msgs)
	got := map[messages.Outcome]int{messages.Stored: res.Stored, messages.Late: res.Late, messages.Duplicate: res.Duplicates}
	if err != nil || got[want] != len(msgs) {
		e.t.Fatalf("ingest of %d messages, all %s: %+v %v", len(msgs), want, res, err)
	}
	return msgs
}

// build archives community i up to end.
func (e *pruneEnv) build(i int, end uint64) {
	e.t.Helper()
	com := e.coms[i]
	e.fence[com.ID.String()]++
	if _, err := e.s.build(context.Background(), e.s.Logger, com, bus.DueEvent{Community: com.ID.String(), End: end},
		e.fence[com.ID.String()]); err != nil {
		e.t.Fatalf("build %s to %d: %v", com.ID, end, err)
	}
}

func (e *pruneEnv) state(i int) *state.Build {
	e.t.Helper()
	st, _, err := e.s.State.GetBuild(context.Background(), e.coms[i].ID.String())
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

// archived reads back community i's committed archives as a member would
// get them: the committed index and archives, fetched from the object store
// into an empty folder, and counts each message hash.
func (e *pruneEnv) archived(i int) map[string]int {
	e.t.Helper()
	fresh := *e.s
	fresh.Config.WorkDir = e.t.TempDir()
	l := fresh.layout()
	if err := fresh.restore(context.Background(), l, e.coms[i].ID, e.state(i)); err != nil {
		e.t.Fatal(err)
	}
	msgs, _, err := fixture.ReadFolder(l.ArchiveDir(e.coms[i].ID), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]int{}
	for _, m := range msgs {
		out[string(m.Hash)]++
	}
	return out
}

// size is the MESSAGES stream's state over msgs.>: records, bytes and
// subjects.
func size(t *testing.T, b *bus.Bus) jetstream.StreamState {
	t.Helper()
	str, err := b.JS.Stream(context.Background(), bus.StreamMessages)
	if err != nil {
		t.Fatal(err)
	}
	info, err := str.Info(context.Background(), jetstream.WithSubjectFilter("msgs.>"))
	if err != nil {
		t.Fatal(err)
	}
	st := info.State
	st.Subjects = nil
	return st
}

// heldSubjects is how many subjects the MESSAGES stream holds.
func heldSubjects(t *testing.T, b *bus.Bus) int {
	t.Helper()
	str, _ := b.JS.Stream(context.Background(), bus.StreamMessages)
	info, err := str.Info(context.Background(), jetstream.WithSubjectFilter("msgs.>"))
	if err != nil {
		t.Fatal(err)
	}
	return len(info.State.Subjects)
}

// held reports whether message m of community i has its record in the messages.
func (e *pruneEnv) held(i int, m archive.Message) bool {
	found := false
	e.b.Read(context.Background(), bus.Read{Stream: bus.StreamMessages, Filter: messages.Subject(e.coms[i].ID, m.Timestamp, m.Hash)},
		func(r *bus.Record) error {
			ms, _ := messages.RecordMessages(r.Subject, r.Header, r.Data)
			for _, got := range ms {
				if bytes.Equal(got.Hash, m.Hash) {
					found = true
					return bus.StopRead
				}
			}
			return nil
		})
	return found
}

// TestBoundedMessageStore builds N windows of M communities (5-hour windows
// not aligned to UTC days, so a day straddles each committed end) and lets
// the pruner's grace pass: MESSAGES then holds exactly the open windows'
// records — as many records, subjects and bytes as a store that was only
// ever given those — and every other message is in its community's committed
// archives, read back from the object messages. A late message sent after its
// window was pruned goes into a supplement and is pruned in turn; a message
// sent again after its record was pruned is archived a second time (the
// documented cost; members drop it by message id). Switched off, the store
// keeps everything.
func TestBoundedMessageStore(t *testing.T) {
	const (
		coms     = 3
		windows  = 10
		perCom   = 300
		interval = 5 * time.Hour
		grace    = time.Second
	)
	now := uint64(time.Now().Unix())
	// Since is 07:20:34 UTC three days back: the last committed end,
	// since + 50 h, is 09:20:34 two days later, and the day holds records on
	// both sides of it.
	since := (now/86400-3)*86400 + 7*3600 + 1234
	for _, tt := range []struct {
		name  string
		grace time.Duration
	}{{"bounded", grace}, {"opt-out keeps the raw store", pruner.Off}} {
		t.Run(tt.name, func(t *testing.T) {
			e := newPruneEnv(t, tt.grace, coms, interval, since)
			all := make([][]archive.Message, coms)
			for i := range coms {
				all[i] = e.ingest(i, perCom, since, now-60, messages.Stored)
			}
			before := size(t, e.b)
			for w := uint64(1); w <= windows; w++ {
				for i := range coms {
					e.build(i, since+w*uint64(interval/time.Second))
				}
			}
			end := since + windows*uint64(interval/time.Second)
			open := func(end uint64) (n int, msgs [][]archive.Message) {
				msgs = make([][]archive.Message, coms)
				for i := range coms {
					for _, m := range all[i] {
						if m.Timestamp >= end {
							msgs[i] = append(msgs[i], m)
							n++
						}
					}
				}
				return n, msgs
			}
			nOpen, openMsgs := open(end)
			straddling := 0
			for i := range coms {
				for _, m := range openMsgs[i] {
					if m.Timestamp/86400 == end/86400 {
						straddling++
					}
				}
			}
			if straddling == 0 {
				t.Fatal("no open-window message on the day of the committed end: the test would not cover a straddling day")
			}

			if tt.grace < 0 {
				time.Sleep(3 * time.Second)
				if after := size(t, e.b); after.Msgs != before.Msgs+coms || after.Bytes <= before.Bytes {
					t.Fatalf("pruning off: stream went from %+v to %+v, want every record kept (plus %d fences)", before, after, coms)
				}
				return
			}
			e.awaitOpenOnly(nOpen, openMsgs, all)
			e.checkArchives(all, func(int, []byte) int { return 1 })
			after := size(t, e.b)
			t.Logf("MESSAGES before pruning %d records / %d bytes, after %d / %d (%d open-window messages, %d on the straddling day)",
				before.Msgs+coms, before.Bytes, after.Msgs, after.Bytes, nOpen, straddling)

			// Late messages for a pruned window, and messages of the first
			// window sent again after their records were pruned.
			late := make([][]archive.Message, coms)
			resent := map[string]bool{}
			for i := range coms {
				late[i] = e.ingest(i, 5, since+3600, since+7200, messages.Late)
				all[i] = append(all[i], late[i]...)
				var first []archive.Message
				for _, m := range all[i] {
					if m.Timestamp < since+uint64(interval/time.Second) && len(first) < 2 {
						first = append(first, m)
						resent[string(m.Hash)] = true
					}
				}
				e.ingestAgain(i, first, messages.Late) // not a duplicate any more: its record is gone
			}
			end += uint64(interval / time.Second)
			for i := range coms {
				e.build(i, end)
				if st := e.state(i); st.LateMessages != 7 {
					t.Fatalf("build to %d archived %d late messages, want 7", end, st.LateMessages)
				}
			}
			nOpen, openMsgs = open(end)
			e.awaitOpenOnly(nOpen, openMsgs, all)
			e.checkArchives(all, func(_ int, h []byte) int {
				if resent[string(h)] {
					return 2
				}
				return 1
			})
		})
	}
}

// awaitOpenOnly waits for the pruner to leave in MESSAGES only records
// holding an open window's message (a record of archived messages alone
// goes; one that also holds messages at or after the committed end stays
// with them, which can only be on the end's UTC day), then checks every
// open message is held and every message removed is archived.
func (e *pruneEnv) awaitOpenOnly(nOpen int, open, all [][]archive.Message) {
	t := e.t
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		prunable, held := 0, 0
		for i, com := range e.coms {
			end := e.state(i).LastEnd
			e.b.Read(context.Background(), bus.Read{Stream: bus.StreamMessages, Filter: "msgs." + com.ID.String() + ".>"}, func(r *bus.Record) error {
				ms, err := messages.RecordMessages(r.Subject, r.Header, r.Data)
				if err != nil || len(ms) == 0 {
					return nil // a fence
				}
				held += len(ms)
				if !slices.ContainsFunc(ms, func(m archive.Message) bool { return m.Timestamp >= end }) {
					prunable++
				}
				return nil
			})
		}
		if prunable == 0 && held >= nOpen {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("MESSAGES holds %d messages, %d records of archived ones alone after 30 s; want them pruned", held, prunable)
		}
		time.Sleep(100 * time.Millisecond)
	}
	extra := 0
	for i := range e.coms {
		arch := e.archived(i)
		end := e.state(i).LastEnd
		for _, m := range all[i] {
			held := e.held(i, m)
			if !held && arch[string(m.Hash)] == 0 {
				t.Fatalf("community %d: message at %d was removed but is in no committed archive", i, m.Timestamp)
			}
			if m.Timestamp >= end && !held {
				t.Fatalf("community %d: open-window message at %d (committed end %d) removed", i, m.Timestamp, end)
			}
			if m.Timestamp < end && held {
				if m.Timestamp/86400 != end/86400 {
					t.Fatalf("community %d: archived message at %d (committed end %d) held off the end's day", i, m.Timestamp, end)
				}
				extra++
			}
		}
	}
	t.Logf("MESSAGES holds the %d open-window messages and %d archived ones sharing their records on the day of the committed end", nOpen, extra)
}

// checkArchives checks that every message before its community's committed
// end is in the committed archives want(i, hash) times, and no other is.
func (e *pruneEnv) checkArchives(all [][]archive.Message, want func(i int, hash []byte) int) {
	e.t.Helper()
	for i := range e.coms {
		arch := e.archived(i)
		end := e.state(i).LastEnd
		n := 0
		for _, m := range all[i] {
			w := 0
			if m.Timestamp < end {
				w = want(i, m.Hash)
			}
			if arch[string(m.Hash)] != w {
				e.t.Fatalf("community %d: message at %d (end %d) is in the archives %d times, want %d", i, m.Timestamp, end, arch[string(m.Hash)], w)
			}
			n += w
		}
		total := 0
		for _, c := range arch {
			total += c
		}
		if total != n {
			e.t.Fatalf("community %d: archives hold %d messages, want %d", i, total, n)
		}
	}
}
