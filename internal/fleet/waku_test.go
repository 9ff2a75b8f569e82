package fleet

import (
	"bytes"
	"context"
	"encoding/hex"
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
	"github.com/archivefleet/archivefleet/internal/testenv"
	"github.com/archivefleet/archivefleet/internal/wakuedge"
	"github.com/archivefleet/archivefleet/internal/wakupeer"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
)

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
	js := testenv.StartJSRelay(t, "WAKU_SYM_CHATS="+strings.Join(chats, ","))

	keyFile := filepath.Join(t.TempDir(), "nodekey")
	edge, peer, err := newWakuEdge(c.ctx, c.bus(), Waku{Listen: DefaultFleetWakuListen, StaticPeers: strings.Join(js.Ready.Addrs, ","),
		Cluster: DefaultWakuCluster, Shards: DefaultWakuShards, MinPeers: 1, InstallationID: "fleet-test"}, keyFile, c.logger("waku"), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	c.run("waku", edge.Run)
	topic := wakuwire.DefaultCommunityShard
	for end := time.Now().Add(20 * time.Second); peer.TopicPeers(topic) < 1 || js.Call(map[string]any{"op": "peers"}).TopicPeers < 1; {
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

	got := map[string]testenv.JSRelayLine{}
	deadline := time.After(90 * time.Second)
	for len(got) < 2 {
		select {
		case l := <-js.Events:
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
		if v.Community != com.ID || v.Clock == 0 || last.Header.Get(announce.HeaderClock) != strconv.FormatUint(v.Clock, 10) || m.InfoHash.HexString() != st.InfoHash {
			t.Fatalf("%s: verified %+v (infohash %s), want community %s, clock %s, infohash %s", chat, v, m.InfoHash.HexString(), com.ID,
				last.Header.Get(announce.HeaderClock), st.InfoHash)
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
		first := got[chats[0]].At
		if got[chats[1]].At.Before(first) {
			first = got[chats[1]].At
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
	ev.Header.Set(announce.HeaderClock, "7")
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
