package faulttest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/messages"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/testenv"
	"github.com/archivefleet/archivefleet/internal/waku/node"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
)

// TestWakuKilledBackfill is #11's fault test: the Waku service is SIGKILLed
// and restarted while a js-waku relay node keeps publishing chat messages
// (js-waku's symmetric encoder, the chat key, a member's signing key, on
// the universal chat and a legacy channel chat, stamped now). Nothing
// published during the outage is in the message store when the service
// comes back; its back-fill from a Store v3 node fetches them, and in the
// end every published message is archived exactly once, each record equal
// field by field to what js-waku computed, and nothing else is. (With the
// harness's SETTLE=0 and 3 s windows, the outage's windows are usually
// built before the back-fill: its messages come in late, as supplements.)
//
// The store node is our own spec-written Store v3 server (internal/waku/node's
// StoreService, in process, relaying with js-waku and storing what it
// relays); that server's independent check is js-waku's store client
// against it, in internal/waku/node (TestJSStoreClient).
func TestWakuKilledBackfill(t *testing.T) {
	const (
		iv        = 3 * time.Second
		before    = 2 * time.Second         // publishing while the service runs
		down      = 2500 * time.Millisecond // publishing while it is dead
		after     = 2 * time.Second         // publishing once it is restarted
		gap       = 60 * time.Millisecond   // between two publications
		archiveBy = 40 * time.Second        // from the last publication
	)
	ctx := context.Background()
	e := newEnv(t)
	since := uint64(time.Now().Unix())
	com := fixture.Community(iv, since)
	cid := com.ID.String()
	legacy := cid + "9b4e1c7a-2f3d-4e8b-a6c5-0d1f2e3a4b5c"
	com.Chats = []string{legacy}
	if err := registry.New(e.ctl.Communities).Put(ctx, com); err != nil {
		t.Fatal(err)
	}

	js := testenv.StartJSRelay(t)
	go func() { // relay.mjs stops replying when its events are not read
		for {
			select {
			case <-js.Events:
			case <-t.Context().Done():
				return
			}
		}
	}()
	storeNode, err := node.New(t.Context(), node.Config{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, StaticPeers: js.Ready.Addrs,
		StoreService: true, ReconnectMin: 50 * time.Millisecond, ReconnectMax: 400 * time.Millisecond, Logger: testenv.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { storeNode.Close() })
	topic := wakuwire.DefaultCommunityShard

	e.start("archiver", "archiver", "ARCHIVEFLEET_WORK_DIR="+filepath.Join(e.dir, "a"))
	e.start("scheduler", "scheduler", "ARCHIVEFLEET_TICK=100ms", "ARCHIVEFLEET_REPUBLISH=0", "ARCHIVEFLEET_RETRY_AFTER=2s")
	keyFile := filepath.Join(e.dir, "waku-nodekey")
	wakuEnv := []string{"ARCHIVEFLEET_WAKU_LISTEN=/ip4/127.0.0.1/tcp/0", "ARCHIVEFLEET_WAKU_KEY_FILE=" + keyFile,
		"ARCHIVEFLEET_WAKU_STATIC_PEERS=" + strings.Join(js.Ready.Addrs, ","),
		"ARCHIVEFLEET_WAKU_STORE_NODES=" + storeNode.Addrs()[0].String(), "ARCHIVEFLEET_WAKU_MIN_PEERS=1"}
	w1 := e.start("waku-1", "waku", wakuEnv...)
	w1.waitLog(t, 20*time.Second, "waku receive started")
	w1.waitLog(t, 20*time.Second, "waku receive routes", "community="+cid, "chats=2")
	w1.waitLog(t, 20*time.Second, "back-fill done", "community="+cid)
	for end := time.Now().Add(20 * time.Second); storeNode.TopicPeers(topic) < 1 || js.Call(map[string]any{"op": "peers"}).TopicPeers < 2; {
		if time.Now().After(end) {
			t.Fatal("js-waku, the store node and the waku service never shared the shard")
		}
		time.Sleep(50 * time.Millisecond)
	}

	member, _ := secp256k1.GeneratePrivateKey()
	memberKey := hex.EncodeToString(member.Serialize())
	type published struct {
		l     testenv.JSRelayLine
		phase string
	}
	var sent []published
	var sendTime time.Duration
	publishFor := func(phase string, d time.Duration) {
		t.Helper()
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(gap) {
			chat := registry.UniversalChatID(com.ID)
			if len(sent)%3 == 2 {
				chat = legacy
			}
			payload := make([]byte, 20+len(sent)*13%400)
			rand.Read(payload)
			began := time.Now()
			l := js.Call(map[string]any{"op": "sendChat", "chat": chat, "payloadHex": hex.EncodeToString(payload),
				"timestampMs": began.UnixMilli(), "sigPrivKeyHex": memberKey})
			sendTime += time.Since(began)
			if l.Recipients < 1 || l.SignerHex == "" {
				t.Fatalf("js-waku sendChat in phase %s: %d recipients, signer %q", phase, l.Recipients, l.SignerHex)
			}
			sent = append(sent, published{l, phase})
		}
	}
	count := func(phase string) (n int) {
		for _, s := range sent {
			if s.phase == phase {
				n++
			}
		}
		return n
	}

	publishFor("before", before)
	liveBefore := procCounter(t, w1, "archivefleet_waku_received_total", `outcome="stored"`)
	if liveBefore < 1 {
		t.Fatalf("the waku service received none of the %d messages live before the kill", len(sent))
	}
	w1.kill()
	killedAt := time.Now()
	publishFor("down", down)

	// Nobody ingested what was published during the outage.
	inStore := storedHashes(t, e, com)
	missing := map[string]string{}
	for _, s := range sent {
		if !inStore[s.l.HashHex] {
			missing[s.l.HashHex] = s.phase
		} else if s.phase == "down" {
			t.Fatalf("message %s published during the outage is in the store before the restart", s.l.HashHex)
		}
	}
	missingBefore := len(missing) - count("down")
	w2 := e.start("waku-2", "waku", wakuEnv...)
	restartedAt := time.Now()
	publishFor("after", after)
	lastAt := time.Now()

	done := w2.waitLog(t, 20*time.Second, "back-fill done", "community="+cid)
	// The back-fill at start runs within tens of milliseconds, before the
	// relay connection to js-waku is even up (let alone gossip, a heartbeat
	// later): what was missing at the restart is back-filled, not received.
	if logInt(t, done, "messages") < count("before")+count("down") {
		t.Fatalf("the store node returned fewer messages than were published before the restart: %s", done)
	}
	if n := logInt(t, done, "new"); n < len(missing) {
		t.Fatalf("the restarted service's first back-fill stored %d new messages; %d were missing at the restart: %s", n, len(missing), done)
	}

	// Every message ends up archived: wait for a build past the last
	// publication that holds them all (late ones arrive as supplements).
	var lastTs uint64
	want := map[string]published{}
	for _, s := range sent {
		ns, _ := strconv.ParseUint(s.l.TimestampNs, 10, 64)
		lastTs = max(lastTs, ns/1e9)
		want[s.l.HashHex] = s
	}
	var got []archive.Message
	var b *state.Build
	var supplements int
	seenInfoHash := ""
	for deadline := time.Now().Add(archiveBy); ; time.Sleep(200 * time.Millisecond) {
		b = e.build(com)
		if b.LastEnd > lastTs && b.InfoHash != seenInfoHash {
			seenInfoHash = b.InfoHash
			got, supplements = archivedMessages(t, e, com, b)
			if len(got) >= len(want) {
				break
			}
		}
		if time.Now().After(deadline) {
			have := map[string]bool{}
			for _, m := range got {
				have[hex.EncodeToString(m.Hash)] = true
			}
			var lost []string
			for h, s := range want {
				if !have[h] {
					lost = append(lost, s.phase+":"+h[:12])
				}
			}
			t.Fatalf("after %v, %d of %d published messages archived (built to %d, last timestamp %d); missing %v", archiveBy,
				len(got), len(want), b.LastEnd, lastTs, lost)
		}
	}
	archivedAt := time.Now()
	liveAfter := procCounter(t, w2, "archivefleet_waku_received_total", `outcome="stored"`) +
		procCounter(t, w2, "archivefleet_waku_received_total", `outcome="late"`)
	if liveAfter < 1 {
		t.Fatalf("the restarted service received none of the %d messages published after the restart live", count("after"))
	}

	seen := map[string]bool{}
	signer := hex.EncodeToString(member.PubKey().SerializeUncompressed())
	for _, m := range got {
		h := hex.EncodeToString(m.Hash)
		w, ok := want[h]
		switch {
		case !ok:
			t.Fatalf("archived message %s was never published", h)
		case seen[h]:
			t.Fatalf("message %s archived twice", h)
		}
		seen[h] = true
		ns, _ := strconv.ParseInt(w.l.TimestampNs, 10, 64)
		for _, f := range []struct{ name, got, want string }{
			{"sig", hex.EncodeToString(m.Sig), w.l.SignerHex},
			{"timestamp", strconv.FormatUint(m.Timestamp, 10), strconv.FormatInt(ns/1e9, 10)},
			{"topic", hex.EncodeToString(m.Topic[:]), w.l.TopicHex},
			{"payload", hex.EncodeToString(m.Payload), w.l.DataHex},
			{"padding", hex.EncodeToString(m.Padding), w.l.PaddingHex},
		} {
			if f.got != f.want {
				t.Fatalf("message %s (%s): %s is %.80s…, js-waku says %.80s…", h, w.phase, f.name, f.got, f.want)
			}
		}
		if w.l.SignerHex != signer {
			t.Fatalf("js-waku's signer %s is not the member's key", w.l.SignerHex)
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("archived %d distinct messages, published %d", len(seen), len(want))
	}

	backfills := strings.Count(w2.log.String(), "msg=\"back-fill done\"")
	t.Logf("FIGURES published %d messages (%d before the kill, %d during the %v outage, %d after the restart; %v per sendChat)",
		len(sent), count("before"), count("down"), restartedAt.Sub(killedAt).Round(10*time.Millisecond), count("after"),
		(sendTime / time.Duration(len(sent))).Round(time.Millisecond))
	t.Logf("FIGURES at the restart %d were not in the store: the %d of the outage and %d received before the kill but not yet ingested (%v stored live before it)",
		len(missing), count("down"), missingBefore, liveBefore)
	t.Logf("FIGURES restarted service: first back-fill %s; %d back-fills in all; back-fill stored %v, live receive stored %v",
		strings.TrimSpace(done[strings.Index(done, "msg="):]), backfills,
		procCounter(t, w2, "archivefleet_waku_backfill_messages_total", `outcome="stored"`)+
			procCounter(t, w2, "archivefleet_waku_backfill_messages_total", `outcome="late"`),
		liveAfter)
	t.Logf("FIGURES all %d archived, field by field as js-waku computed, none lost, doubled or extra, %v after the last publication (%d archives, %d of them supplements of late messages)",
		len(got), archivedAt.Sub(lastAt).Round(100*time.Millisecond), len(b.Archives), supplements)
}

// storedHashes are the hashes (hex) of every message of com in the message
// messages.
func storedHashes(t *testing.T, e *env, com *registry.Community) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for m, err := range (&messages.Store{Bus: e.ctl}).Source(com.ID).Messages(context.Background(), com.Since, uint64(time.Now().Unix())+60) {
		if err != nil {
			t.Fatal(err)
		}
		out[hex.EncodeToString(m.Hash)] = true
	}
	return out
}

// archivedMessages reads every archive of build b from the object store, in
// index order, supplements included (a supplement repeats an archived
// window with its late messages), and returns their messages and how many
// archives are supplements.
func archivedMessages(t *testing.T, e *env, com *registry.Community, b *state.Build) ([]archive.Message, int) {
	t.Helper()
	c := com.ID.String()
	dir := filepath.Join(e.dir, "check", c, b.InfoHash)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, archive.DataFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := state.FetchArchives(context.Background(), e.ctl, c, b.Archives, 0, f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	index, err := e.ctl.Objects.GetBytes(context.Background(), state.ObjectIndex(c, b.InfoHash))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, archive.IndexFile), index, 0o644); err != nil {
		t.Fatal(err)
	}
	folder, err := archive.OpenFolder(dir, nil, archive.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer folder.Close()
	var out []archive.Message
	windows, supplements := map[[2]uint64]bool{}, 0
	for _, en := range folder.Index.ByFrom() {
		if w := [2]uint64{en.From, en.To}; windows[w] {
			supplements++
		} else {
			windows[w] = true
		}
		a, err := archive.ReadArchive(folder.Data, en, nil)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a.Messages...)
	}
	return out, supplements
}

// procCounter sums the samples of a counter on a service's /metrics whose
// line contains label (e.g. `outcome="stored"`).
func procCounter(t *testing.T, p *proc, name, label string) float64 {
	t.Helper()
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(p.metrics(t)))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+"{") && strings.Contains(line, label) {
			fields := strings.Fields(line)
			v, _ := strconv.ParseFloat(fields[len(fields)-1], 64)
			sum += v
		}
	}
	return sum
}

// logInt reads the integer field key=N of a text log line.
func logInt(t *testing.T, line, key string) int {
	t.Helper()
	m := regexp.MustCompile(`\b` + regexp.QuoteMeta(key) + `=(\d+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no %s= in %q", key, line)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}
