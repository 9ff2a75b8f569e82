package fleet

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/archivefleet/archivefleet/internal/announce"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/wakuedge"
	"github.com/archivefleet/archivefleet/internal/wakupeer"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
)

// jsChatLine is a line of interop/js-relay/relay.mjs (see its header).
type jsChatLine struct {
	Event           string   `json:"event"`
	Error           string   `json:"error"`
	PeerID          string   `json:"peerId"`
	Addrs           []string `json:"addrs"`
	Chat            string   `json:"chat"`
	PubsubTopic     string   `json:"pubsubTopic"`
	ContentTopic    string   `json:"contentTopic"`
	PayloadHex      string   `json:"payloadHex"`
	SignerHex       string   `json:"signerHex"`
	HashHex         string   `json:"hashHex"`
	WakuPayloadSize int      `json:"wakuPayloadSize"`
	WakuMessageSize int      `json:"wakuMessageSize"`
	TopicPeers      int      `json:"topicPeers"`
	at              time.Time
}

type jsNode struct {
	in      io.WriteCloser
	events  chan jsChatLine
	replies chan jsChatLine
	ready   jsChatLine
	stderr  *bytes.Buffer
}

// startJSWaku runs the js-waku relay node of interop/js-relay, subscribed
// with its own symmetric decoders to chats.
func startJSWaku(t *testing.T, chats ...string) *jsNode {
	t.Helper()
	if testing.Short() {
		t.Skip("js-waku interop: skipped with -short")
	}
	dir, _ := filepath.Abs(filepath.Join("..", "..", "interop", "js-relay"))
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("`node` is not on PATH (need Node 20+); scripts/test installs %s/node_modules with npm ci", dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@waku", "sdk")); err != nil {
		t.Fatalf("%s/node_modules missing: run `npm ci --prefix interop/js-relay`", dir)
	}
	cmd := exec.Command(node, "--import", "./polyfill.mjs", "relay.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NODE_ENV=test", "WAKU_SYM_CHATS="+strings.Join(chats, ","))
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	j := &jsNode{in: in, events: make(chan jsChatLine, 64), replies: make(chan jsChatLine, 16), stderr: &bytes.Buffer{}}
	cmd.Stderr = j.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var l jsChatLine
			if json.Unmarshal(sc.Bytes(), &l) != nil {
				continue
			}
			l.at = time.Now()
			if l.Event != "" {
				j.events <- l
			} else {
				j.replies <- l
			}
		}
	}()
	t.Cleanup(func() {
		in.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("relay.mjs stderr:\n%s", j.stderr)
		}
	})
	select {
	case l := <-j.events:
		if l.Event != "ready" || len(l.Addrs) == 0 {
			t.Fatalf("relay.mjs first line %+v", l)
		}
		j.ready = l
	case <-time.After(30 * time.Second):
		t.Fatalf("relay.mjs did not start; stderr:\n%s", j.stderr)
	}
	return j
}

func (j *jsNode) peers(t *testing.T) jsChatLine {
	t.Helper()
	if _, err := j.in.Write([]byte(`{"op":"peers"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-j.replies:
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("relay.mjs: no reply to peers")
	}
	return jsChatLine{}
}

// TestWakuEdgeToJSWaku is the Waku edge's acceptance test: a community is
// registered, messages ingested, an archive built, seeded and announced by
// the in-process fleet; the Waku edge (a real wakupeer, js-waku as its
// static peer) publishes the announcement, and js-waku, which derives the
// chat keys and content topics itself, opens it on both chats. The Go side
// then unwraps the ProtocolMessage and verifies the AMM as a member would:
// type 43, signed by the community, the announced clock, and the magnet's
// infohash is the committed build's.
func TestWakuEdgeToJSWaku(t *testing.T) {
	c := newCluster(t)
	const iv = 4 * time.Second
	now := uint64(time.Now().Unix())
	since := now - 3*uint64(iv/time.Second)
	com := c.register(iv, since)
	cid := com.ID.String()
	chats := wakuedge.Chats(cid)
	js := startJSWaku(t, chats...)

	keyFile := filepath.Join(t.TempDir(), "nodekey")
	edge, peer, err := newWakuEdge(c.ctx, c.bus(), Waku{Listen: DefaultFleetWakuListen, StaticPeers: strings.Join(js.ready.Addrs, ","),
		Cluster: DefaultWakuCluster, Shards: DefaultWakuShards, MinPeers: 1, InstallationID: "fleet-test"}, keyFile, c.logger("waku"), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	c.run("waku", edge.Run)
	topic := wakuwire.DefaultCommunityShard
	for end := time.Now().Add(20 * time.Second); peer.TopicPeers(topic) < 1 || js.peers(t).TopicPeers < 1; {
		if time.Now().After(end) {
			t.Fatal("js-waku and the edge never shared the shard")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Time the path from the seeder's seeding-started event to js receipt.
	seeding := make(chan time.Time, 8)
	sub, err := c.ctl.NC.Subscribe(bus.SubjectSeeding(cid), func(*nats.Msg) { seeding <- time.Now() })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	c.archiver()
	if res := ingestNATS(t, c.ctl, com, messages(com, 60, since, now)); res.Stored != 60 {
		t.Fatalf("stored %d of 60", res.Stored)
	}
	c.scheduler()
	c.seeder("s1")
	c.announcer()

	got := map[string]jsChatLine{}
	deadline := time.After(90 * time.Second)
	for len(got) < 2 {
		select {
		case l := <-js.events:
			if l.Event == "chat" {
				if _, dup := got[l.Chat]; !dup {
					got[l.Chat] = l
				}
			}
		case <-deadline:
			t.Fatalf("js-waku received %d of 2 chats", len(got))
		}
	}
	var seededAt time.Time
	select {
	case seededAt = <-seeding:
	default:
	}

	st, _, err := (&state.Store{KV: c.ctl.State}).GetBuild(context.Background(), cid)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := c.ctl.JS.Stream(context.Background(), bus.StreamAnnounced)
	if err != nil {
		t.Fatal(err)
	}
	last, err := stream.GetLastMsgForSubject(context.Background(), bus.SubjectAnnounced(cid))
	if err != nil {
		t.Fatal(err)
	}
	nodeKey, err := wakupeer.LoadOrCreateKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := nodeKey.Raw()
	signer := secp256k1.PrivKeyFromBytes(raw).PubKey()
	var clock uint64
	for _, chat := range chats {
		l := got[chat]
		if l.PubsubTopic != topic || l.ContentTopic != wakuwire.ChatContentTopic(chat) {
			t.Fatalf("%s: received on %s / %s", chat, l.PubsubTopic, l.ContentTopic)
		}
		if s := l.SignerHex; s != hex.EncodeToString(signer.SerializeUncompressed()) && s != hex.EncodeToString(signer.SerializeCompressed()) {
			t.Fatalf("%s: js-waku recovered signer %s, want the edge's node key %x", chat, s, signer.SerializeCompressed())
		}
		pm, _ := hex.DecodeString(l.PayloadHex)
		inst, amm, err := wakuwire.UnwrapPublic(pm)
		if err != nil || inst != "fleet-test" {
			t.Fatalf("%s: ProtocolMessage: %q %v", chat, inst, err)
		}
		if !bytes.Equal(amm, last.Data) {
			t.Fatalf("%s: the AMM is not the announced bytes", chat)
		}
		v, err := announce.Verify(amm)
		if err != nil {
			t.Fatalf("%s: %v", chat, err)
		}
		m, err := metainfo.ParseMagnetUri(v.Magnet)
		if err != nil {
			t.Fatal(err)
		}
		if v.Community != com.ID || v.Clock == 0 || last.Header.Get(wakuedge.HeaderClock) != strconv.FormatUint(v.Clock, 10) || m.InfoHash.HexString() != st.InfoHash {
			t.Fatalf("%s: verified %+v (infohash %s), want community %s, clock %s, infohash %s", chat, v, m.InfoHash.HexString(), com.ID,
				last.Header.Get(wakuedge.HeaderClock), st.InfoHash)
		}
		clock = v.Clock
		t.Logf("%s: sizes: AMM %d B, ProtocolMessage %d B, rfc26 payload %d B, WakuMessage %d B", chat, len(amm), len(pm),
			l.WakuPayloadSize, l.WakuMessageSize)
	}
	ws, _, err := (&state.Store{KV: c.ctl.State}).GetWaku(context.Background(), cid)
	if err != nil || ws.Clock != clock || len(ws.Hashes) != 2 {
		t.Fatalf("waku state %+v %v", ws, err)
	}
	for i, chat := range chats {
		if got[chat].HashHex != ws.Hashes[i] {
			t.Fatalf("%s: js-waku hash %s, ours %s", chat, got[chat].HashHex, ws.Hashes[i])
		}
	}
	if !seededAt.IsZero() {
		first := got[chats[0]].at
		if got[chats[1]].at.Before(first) {
			first = got[chats[1]].at
		}
		t.Logf("seeding-started to js-waku receipt: %v", first.Sub(seededAt).Round(time.Millisecond))
	}
}

// TestWakuEdgeOffline: with the all-in-one's WAKU_MIN_PEERS=0 the edge
// publishes with no peer at all (nobody receives it, nothing waits), and the
// readiness check passes; with 1 it waits and the check fails.
func TestWakuEdgeOffline(t *testing.T) {
	c := newCluster(t)
	com := c.register(time.Hour, uint64(time.Now().Unix()))
	b := c.bus()
	w := DefaultAllInOneConfig().Waku
	edge, peer, err := newWakuEdge(c.ctx, b, w, filepath.Join(t.TempDir(), "nodekey"), c.logger("waku"), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	msg, err := announce.BuildMessage(com.SigningKey, 7, "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567")
	if err != nil {
		t.Fatal(err)
	}
	ev := bus.Raw{Subject: bus.SubjectAnnounced(com.ID.String()), Header: nats.Header{}, Data: msg}
	ev.Header.Set(wakuedge.HeaderClock, "7")
	if err := edge.Handle(c.ctx, ev, bus.Delivery{}); err != nil {
		t.Fatalf("offline publish: %v", err)
	}
	if err := wakuReady(peer, 0)(c.ctx); err != nil {
		t.Fatal(err)
	}
	if wakuReady(peer, 1)(c.ctx) == nil {
		t.Fatal("ready with no peer and MIN_PEERS=1")
	}
	ws, _, err := (&state.Store{KV: b.State}).GetWaku(c.ctx, com.ID.String())
	if err != nil || ws.Clock != 7 {
		t.Fatalf("waku state %+v %v", ws, err)
	}
}
