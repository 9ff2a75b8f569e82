package fleet

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/archivefleet/archivefleet/internal/announcer"
	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/lock"
	"github.com/archivefleet/archivefleet/internal/messages"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/seeder"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

var testBusConfig = bus.Config{AckWait: 10 * time.Second, MaxDeliver: 20}

// cluster runs services in this process, each with its own NATS connection
// and Redis client, against one NATS server and one redis-server.
type cluster struct {
	t      *testing.T
	ns     *server.Server
	redis  string
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errs   chan error
	seeds  []*seeder.Service
	ctl    *bus.Bus
	conns  []*nats.Conn
	// archiverStore is the message store of the last archiver started.
	archiverStore *messages.Store
	// trackerURL, when set, is the fleet tracker archivers put first.
	trackerURL string
	// keys are the private keys of the communities registered.
	keys map[archive.CommunityID][]byte
}

// bus connects a service; its connection closes only after every service
// has stopped, as in a process where services stop before the connection.
func (c *cluster) bus() *bus.Bus {
	nc, err := nats.Connect(c.ns.ClientURL())
	if err != nil {
		c.t.Fatal(err)
	}
	c.conns = append(c.conns, nc)
	b, err := bus.Setup(context.Background(), nc, testBusConfig)
	if err != nil {
		c.t.Fatal(err)
	}
	return b
}

func newCluster(t *testing.T) *cluster {
	c := &cluster{t: t, ns: testenv.NATS(t), redis: testenv.Redis(t), errs: make(chan error, 100), keys: map[archive.CommunityID][]byte{}}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.ctl = testenv.Bus(t, c.ns, testBusConfig)
	t.Cleanup(c.stop)
	return c
}

func (c *cluster) stop() {
	c.cancel()
	c.wg.Wait()
	for _, nc := range c.conns {
		nc.Close()
	}
	close(c.errs)
	for err := range c.errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			c.t.Errorf("service: %v", err)
		}
	}
}

func (c *cluster) logger(name string) *slog.Logger {
	lvl := slog.LevelWarn
	if os.Getenv("ARCHIVEFLEET_TEST_LOG") == "debug" {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})).With("service", name)
}

func (c *cluster) run(name string, fn func(context.Context) error) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if err := fn(c.ctx); err != nil {
			c.errs <- fmt.Errorf("%s: %w", name, err)
		}
	}()
}

func (c *cluster) archiver() *messages.Store {
	b := c.bus()
	rc := redis.NewClient(&redis.Options{Addr: c.redis})
	c.t.Cleanup(func() { rc.Close() })
	svc, st := newArchiver(b, &lock.Redis{Client: rc, Prefix: "test:"}, ArchiverConfig{WorkDir: c.t.TempDir(), Slots: 2,
		LockTTL: 10 * time.Second, Trackers: "none", TrackerURL: c.trackerURL}, c.logger("archiver"), prometheus.NewRegistry())
	c.run("archiver", svc.Run)
	stop, err := st.ServeNATS(c.ctx, "")
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(stop)
	if err := b.NC.Flush(); err != nil {
		c.t.Fatal(err)
	}
	c.archiverStore = st
	return st
}

func (c *cluster) seeder(id string) *seeder.Service {
	b := c.bus()
	svc := newSeeder(b, SeederConfig{ID: id, DataDir: c.t.TempDir(), Listen: "127.0.0.1:0"}, c.logger("seeder"), prometheus.NewRegistry())
	c.run("seeder", svc.Run)
	c.seeds = append(c.seeds, svc)
	return svc
}

func (c *cluster) announcer(webhook ...string) {
	b := c.bus()
	cfg := AnnouncerConfig{Slots: 2}
	if len(webhook) > 0 {
		cfg.WebhookURL = webhook[0]
	}
	svc := newAnnouncer(b, cfg, c.logger("announcer"), prometheus.NewRegistry())
	c.run("announcer", svc.Run)
}

func (c *cluster) scheduler() {
	b := c.bus()
	svc := newScheduler(b, SchedulerConfig{Tick: 200 * time.Millisecond, RetryAfter: 3 * time.Second}, c.logger("scheduler"), prometheus.NewRegistry())
	c.run("scheduler", svc.Run)
}

// register makes a community with a fresh key.
func (c *cluster) register(interval time.Duration, since uint64) *registry.Community {
	key := fixture.Key()
	com := fixture.CommunityFromKey(key, interval, since, archive.Topic{1, 2, 3, 4}, archive.Topic{1, 2, 3, 5})
	c.put(com, key)
	return com
}

// put registers com, storing its key (com's own) where the announcer reads
// it.
func (c *cluster) put(com *registry.Community, key []byte) {
	c.t.Helper()
	if _, err := registry.NewKeys(c.ctl.CommunityKeys).Put(context.Background(), key); err != nil {
		c.t.Fatal(err)
	}
	if err := registry.New(c.ctl.Communities).Put(context.Background(), com); err != nil {
		c.t.Fatal(err)
	}
	c.keys[com.ID] = key
}

// messages makes n messages with timestamps spread evenly over [from, to).
func sampleMessages(com *registry.Community, n int, from, to uint64) []archive.Message {
	return fixture.Messages{N: n, From: from, To: to, Topics: com.Topics}.Make()
}

func hashesBefore(msgs []archive.Message, end uint64) []string {
	var out []string
	for _, m := range msgs {
		if m.Timestamp < end {
			out = append(out, m.Hash.String())
		}
	}
	slices.Sort(out)
	return out
}

func hashesOf(msgs []archive.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.Hash.String()
	}
	slices.Sort(out)
	return out
}

// waitAnnounced waits for an announcement on the community's subject newer
// than afterClock, verifies it as a member would and returns it.
func (c *cluster) waitAnnounced(com *registry.Community, afterClock uint64, timeout time.Duration) *announcer.Verified {
	c.t.Helper()
	s, err := c.ctl.JS.Stream(context.Background(), bus.StreamAnnounced)
	if err != nil {
		c.t.Fatal(err)
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		m, err := s.GetLastMsgForSubject(context.Background(), bus.SubjectAnnounced(com.ID.String()))
		if err == nil {
			v, err := announcer.Verify(m.Data)
			if err != nil {
				c.t.Fatalf("announcement does not verify: %v", err)
			}
			if v.Community != com.ID {
				c.t.Fatalf("announcement signed by %s, want %s", v.Community, com.ID)
			}
			if v.Clock > afterClock {
				return v
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("no announcement for %s after clock %d within %v", com.ID, afterClock, timeout)
	return nil
}

// download fetches a torrent with a separate anacrolix client given only the
// magnet link, and returns every archived message.
func download(t *testing.T, magnet string, timeout time.Duration) ([]archive.Message, *archive.Index) {
	t.Helper()
	dir := t.TempDir()
	tt := testenv.Download(t, dir, magnet, timeout)
	return readFolder(t, filepath.Join(dir, tt.Name()), nil)
}

// readFolder returns every message of an archive folder, oldest archive first.
func readFolder(t *testing.T, dir string, dec archive.Decrypter) ([]archive.Message, *archive.Index) {
	t.Helper()
	msgs, ix, err := fixture.ReadFolder(dir, dec)
	if err != nil {
		t.Fatal(err)
	}
	return msgs, ix
}

// gotInfoWithin reports whether any peer serves the magnet's metadata in time.
func gotInfoWithin(t *testing.T, magnet string, d time.Duration) bool {
	tt, err := testenv.TorrentClient(t, t.TempDir(), false).AddMagnet(magnet)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-tt.GotInfo():
		return true
	case <-time.After(d):
		return false
	}
}

func ingestNATS(t *testing.T, b *bus.Bus, com *registry.Community, msgs []archive.Message) messages.IngestResult {
	t.Helper()
	var lines []byte
	for _, m := range msgs {
		l, _ := json.Marshal(m)
		lines = append(append(lines, l...), '\n')
	}
	reply, err := b.NC.Request(bus.SubjectIngest(com.ID.String()), lines, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		messages.IngestResult
		Error string `json:"error"`
	}
	if err := json.Unmarshal(reply.Data, &res); err != nil || res.Error != "" {
		t.Fatalf("ingest: %s %v", reply.Data, err)
	}
	return res.IngestResult
}

// TestFleetEndToEnd registers a community, ingests messages over several
// windows, runs every service, and has a separate BitTorrent client download
// the announced magnet link; then a second window extends the torrent.
func TestFleetEndToEnd(t *testing.T) {
	c := newCluster(t)
	const iv = 4 * time.Second
	now := uint64(time.Now().Unix())
	since := now - 3*uint64(iv/time.Second)
	com := c.register(iv, since)
	first := sampleMessages(com, 120, since, now)
	c.archiver() // serves ingest too
	if res := ingestNATS(t, c.ctl, com, first); res.Stored != len(first) {
		t.Fatalf("stored %d of %d", res.Stored, len(first))
	}
	if res := ingestNATS(t, c.ctl, com, first[:10]); res.Duplicates != 10 {
		t.Fatalf("re-ingest: %+v, want 10 duplicates", res)
	}
	c.scheduler()
	seeder := c.seeder("s1")
	c.announcer()

	a1 := c.waitAnnounced(com, 0, 30*time.Second)
	st1, _, err := (&state.Store{KV: c.ctl.State}).GetBuild(context.Background(), com.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	m1, _ := metainfo.ParseMagnetUri(a1.Magnet)
	if m1.InfoHash.HexString() != st1.InfoHash || len(m1.Params["x.pe"]) == 0 {
		t.Fatalf("magnet %s: want infohash %s and an x.pe peer", a1.Magnet, st1.InfoHash)
	}
	got, ix1 := download(t, a1.Magnet, 30*time.Second)
	if want := hashesBefore(first, st1.LastEnd); !slices.Equal(hashesOf(got), want) || len(want) == 0 {
		t.Fatalf("downloaded %d messages, want the %d ingested before %d", len(got), len(want), st1.LastEnd)
	}

	// A second window: messages stamped now land in the open window.
	second := sampleMessages(com, 40, uint64(time.Now().Unix()), uint64(time.Now().Unix())+1)
	ingestNATS(t, c.ctl, com, second)
	// Wait for the announcement of the torrent that holds every new message.
	var a2 *announcer.Verified
	for clock := a1.Clock; ; clock = a2.Clock {
		a2 = c.waitAnnounced(com, clock, 30*time.Second)
		st, _, err := (&state.Store{KV: c.ctl.State}).GetBuild(context.Background(), com.ID.String())
		if err != nil {
			t.Fatal(err)
		}
		m2, _ := metainfo.ParseMagnetUri(a2.Magnet)
		if m2.InfoHash.HexString() == st.InfoHash && len(hashesBefore(second, st.LastEnd)) == len(second) {
			break
		}
	}
	if a2.Clock <= a1.Clock {
		t.Fatalf("second clock %d not above first %d", a2.Clock, a1.Clock)
	}
	st2, _, _ := (&state.Store{KV: c.ctl.State}).GetBuild(context.Background(), com.ID.String())
	all := append(slices.Clone(first), second...)
	got2, ix2 := download(t, a2.Magnet, 30*time.Second)
	if want := hashesBefore(all, st2.LastEnd); !slices.Equal(hashesOf(got2), want) {
		t.Fatalf("second download has %d messages, want %d", len(got2), len(want))
	}
	// The second torrent extends the first: same index entries, same data pieces.
	for _, e := range ix1.Entries {
		if e2, ok := ix2.Lookup(e.ID); !ok || e2.Offset != e.Offset || e2.Size != e.Size {
			t.Fatalf("archive %s of the first torrent changed in the second", e.ID)
		}
	}
	p1, p2 := torrentPieces(t, c.ctl, com, st1.InfoHash), torrentPieces(t, c.ctl, com, st2.InfoHash)
	n := int(st1.DataBytes / archive.PieceLength * 20)
	if !slices.Equal(p1[:n], p2[:n]) {
		t.Fatal("data pieces of the first torrent changed in the second")
	}
	if seeder.Seeding(com.ID.String()) != st2.InfoHash {
		t.Fatalf("seeder seeds %s, want %s", seeder.Seeding(com.ID.String()), st2.InfoHash)
	}
	if gotInfoWithin(t, a1.Magnet, 3*time.Second) {
		t.Fatal("the superseded torrent is still served")
	}

	// Disabling stops the schedule and unseeds, as status-go's
	// StopHistoryArchiveTasksInterval does.
	if err := registry.New(c.ctl.Communities).SetDisabled(context.Background(), com.ID, true); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return seeder.Seeding(com.ID.String()) == "" }, "the disabled community to be no longer seeded")
	before, _, _ := (&state.Store{KV: c.ctl.State}).GetBuild(context.Background(), com.ID.String())
	ingestNATS(t, c.ctl, com, sampleMessages(com, 5, uint64(time.Now().Unix()), uint64(time.Now().Unix())+1))
	time.Sleep(2*iv + time.Second)
	after, _, _ := (&state.Store{KV: c.ctl.State}).GetBuild(context.Background(), com.ID.String())
	if after.LastEnd != before.LastEnd {
		t.Fatalf("disabled community archived up to %d (was %d)", after.LastEnd, before.LastEnd)
	}
}

func torrentPieces(t *testing.T, b *bus.Bus, com *registry.Community, ih string) []byte {
	t.Helper()
	r, err := b.Objects.Get(context.Background(), state.ObjectTorrent(com.ID.String(), ih))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	raw, _ := io.ReadAll(r)
	mi, err := metainfo.Load(bytesReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	info, err := mi.UnmarshalInfo()
	if err != nil {
		t.Fatal(err)
	}
	return info.Pieces
}

// TestFleetScale runs two schedulers, three archivers, two seeders and an
// announcer on one NATS and one Redis for 50 communities: every window is
// archived exactly once, every message is archived, every community is
// announced, and both seeders seed every community's newest torrent.
func TestFleetScale(t *testing.T) {
	if testing.Short() {
		t.Skip("scale test")
	}
	c := newCluster(t)
	const iv = 3 * time.Second
	now := uint64(time.Now().Unix())
	since := now - 2*uint64(iv/time.Second)
	var coms []*registry.Community
	var msgs [][]archive.Message
	st := c.archiver()
	c.archiver()
	c.archiver()
	for i := 0; i < 50; i++ {
		com := c.register(iv, since)
		m := sampleMessages(com, 30, since, now+2*uint64(iv/time.Second))
		if _, err := st.Ingest(context.Background(), com.ID, m); err != nil {
			t.Fatal(err)
		}
		coms, msgs = append(coms, com), append(msgs, m)
	}
	c.scheduler()
	c.scheduler()
	c.seeder("s1")
	c.seeder("s2")
	c.announcer()

	// Every message's window must close and be archived and announced.
	target := now + 2*uint64(iv/time.Second)
	states := &state.Store{KV: c.ctl.State}
	deadline := time.Now().Add(90 * time.Second)
	for _, com := range coms {
		for {
			b, _, err := states.GetBuild(context.Background(), com.ID.String())
			if err != nil {
				t.Fatal(err)
			}
			a, _, err := states.GetAnnounce(context.Background(), com.ID.String())
			if err != nil {
				t.Fatal(err)
			}
			if b.LastEnd > target && a.InfoHash == b.InfoHash && b.InfoHash != "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("community %s: lastEnd %d (want > %d), announced %q, built %q", com.ID, b.LastEnd, target, a.InfoHash, b.InfoHash)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for i, com := range coms {
		id := com.ID.String()
		b, _, _ := states.GetBuild(context.Background(), id)
		for _, s := range c.seeds {
			// Seeders follow the state asynchronously; give them a moment.
			for end := time.Now().Add(20 * time.Second); s.Seeding(id) != b.InfoHash && time.Now().Before(end); {
				time.Sleep(50 * time.Millisecond)
			}
			if s.Seeding(id) != b.InfoHash {
				t.Fatalf("community %d: a seeder seeds %q, want %s", i, s.Seeding(id), b.InfoHash)
			}
		}
		f, err := archive.OpenFolder(filepath.Join(c.seeds[i%2].Config.DataDir, id), nil, archive.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		windows := map[[2]uint64]bool{}
		var got []archive.Message
		for _, e := range f.Index.ByFrom() {
			w := [2]uint64{e.From, e.To}
			if windows[w] {
				t.Fatalf("community %d: window [%d, %d) archived twice", i, e.From, e.To)
			}
			windows[w] = true
			a, err := archive.ReadArchive(f.Data, e, nil)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, a.Messages...)
		}
		f.Close()
		if len(b.Archives) != len(f.Index.Entries) {
			t.Fatalf("community %d: state lists %d archives, index %d", i, len(b.Archives), len(f.Index.Entries))
		}
		if want := hashesBefore(msgs[i], b.LastEnd); !slices.Equal(hashesOf(got), want) {
			t.Fatalf("community %d: %d messages archived, want %d", i, len(got), len(want))
		}
	}
}

// TestRepublishAndEncryptedCommunity runs a token-gated community through
// the fleet (archives and index sealed with the hash ratchet, readable with
// the community key, ratchet state committed) and checks the scheduler
// republishes the current magnet link with a growing clock.
func TestRepublishAndEncryptedCommunity(t *testing.T) {
	c := newCluster(t)
	const iv = 3 * time.Second
	now := uint64(time.Now().Unix())
	since := now - 2*uint64(iv/time.Second)
	rk := archive.RatchetKey{Timestamp: uint64(time.Now().UnixMilli()), Key: make([]byte, 32)}
	rand.Read(rk.Key)
	key := fixture.Key()
	com := fixture.CommunityFromKey(key, iv, since, archive.Topic{7, 7, 7, 7})
	com.Encrypted, com.InstallationID, com.RatchetKey = true, "f0e1d2c3-archivefleet-test", &rk
	id := com.ID
	c.put(com, key)
	msgs := sampleMessages(com, 60, since, now)
	st := c.archiver()
	if _, err := st.Ingest(context.Background(), id, msgs); err != nil {
		t.Fatal(err)
	}
	b := c.bus()
	sched := newScheduler(b, SchedulerConfig{Tick: 200 * time.Millisecond, Republish: 2 * time.Second, RetryAfter: 3 * time.Second},
		c.logger("scheduler"), prometheus.NewRegistry())
	c.run("scheduler", sched.Run)
	seeder := c.seeder("s1")
	hooked := make(chan bus.Announcement, 16)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a bus.Announcement
		if err := json.NewDecoder(r.Body).Decode(&a); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		hooked <- a
	}))
	defer hook.Close()
	c.announcer(hook.URL)

	a1 := c.waitAnnounced(com, 0, 30*time.Second)
	select {
	case a := <-hooked:
		if v, err := announcer.Verify(a.Message); err != nil || v.Community != id || a.ChatID != id.String()+"-magnetlinks" {
			t.Fatalf("webhook got %+v (%v)", a, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("webhook not called")
	}
	state1, _, _ := (&state.Store{KV: c.ctl.State}).GetBuild(context.Background(), id.String())
	if state1.Ratchet == nil || state1.Ratchet.SeqNo == 0 {
		t.Fatalf("ratchet state not committed: %+v", state1.Ratchet)
	}
	// Republish: same torrent, larger clock (or a newer torrent if a window closed meanwhile).
	a2 := c.waitAnnounced(com, a1.Clock, 20*time.Second)
	if a2.Clock <= a1.Clock {
		t.Fatalf("republished clock %d not above %d", a2.Clock, a1.Clock)
	}
	// A member holding the community key reads the sealed archives from the seeder's files.
	ih := seeder.Seeding(id.String())
	for end := time.Now().Add(10 * time.Second); ih == ""; ih = seeder.Seeding(id.String()) {
		if time.Now().After(end) {
			t.Fatal("not seeded")
		}
		time.Sleep(50 * time.Millisecond)
	}
	member := &archive.HashRatchet{Community: id, Keys: []archive.RatchetKey{rk}}
	if _, err := archive.OpenFolder(filepath.Join(seeder.Config.DataDir, id.String()), nil, archive.Limits{}); !errors.Is(err, archive.ErrEncryptedNoKey) {
		t.Fatalf("sealed index opened without keys: %v", err)
	}
	got, ix := readFolder(t, filepath.Join(seeder.Config.DataDir, id.String()), member)
	if !ix.Encrypted || len(got) == 0 {
		t.Fatalf("encrypted=%v, %d messages", ix.Encrypted, len(got))
	}
	// Every message of the first two windows is in the sealed archives.
	gotHashes := hashesOf(got)
	for _, h := range hashesBefore(msgs, since+2*uint64(iv/time.Second)) {
		if _, ok := slices.BinarySearch(gotHashes, h); !ok {
			t.Fatalf("message %s missing from the decrypted archives", h)
		}
	}
}

// TestDeadLetterAndRedelivery sends the archiver an undecodable event, which
// must land on the dead-letter subject with its payload and reason, and a
// repeat of a committed window under a new message id (as after the dedup
// window), which must change nothing.
func TestDeadLetterAndRedelivery(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	c.archiver()
	if _, err := c.ctl.JS.Publish(ctx, bus.SubjectDue("garbage"), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	dlq, _ := c.ctl.JS.Stream(ctx, bus.StreamDLQ)
	var dl bus.DeadLetter
	for end := time.Now().Add(15 * time.Second); ; {
		m, err := dlq.GetLastMsgForSubject(ctx, bus.SubjectDLQ("due"))
		if err == nil {
			json.Unmarshal(m.Data, &dl)
			break
		}
		if time.Now().After(end) {
			t.Fatal("undecodable event not dead-lettered")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if string(dl.Payload) != "{not json" || !strings.Contains(dl.Reason, "decode") || dl.Subject != bus.SubjectDue("garbage") {
		t.Fatalf("dead letter %+v", dl)
	}

	const iv = 2 * time.Second
	now := uint64(time.Now().Unix())
	com := c.register(iv, now-4)
	if _, err := c.archiverStore.Ingest(ctx, com.ID, sampleMessages(com, 10, now-4, now)); err != nil {
		t.Fatal(err)
	}
	ev := bus.DueEvent{Community: com.ID.String(), From: now - 4, End: now, Reason: "test"}
	states := &state.Store{KV: c.ctl.State}
	var first *state.Build
	for i, id := range []string{"first", "again-after-window"} {
		if _, err := c.ctl.Publish(ctx, bus.SubjectDue(ev.Community), id, ev); err != nil {
			t.Fatal(err)
		}
		for end := time.Now().Add(15 * time.Second); ; {
			info, _ := c.ctl.JS.Stream(ctx, bus.StreamDue)
			si, _ := info.Info(ctx)
			b, _, _ := states.GetBuild(ctx, ev.Community)
			if si.State.Msgs == 0 && b.LastEnd == ev.End {
				if i == 0 {
					first = b
				} else if b.Fence != first.Fence || b.InfoHash != first.InfoHash || !b.BuiltAt.Equal(first.BuiltAt) {
					t.Fatalf("a repeated window was built again: %+v then %+v", first, b)
				}
				break
			}
			if time.Now().After(end) {
				t.Fatalf("event %s not processed", id)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
