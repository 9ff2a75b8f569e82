package fleet

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/archivefleet/archivefleet/internal/announce"
	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/testenv"
	"github.com/archivefleet/archivefleet/internal/wakuedge"
	"github.com/archivefleet/archivefleet/internal/wakupeer"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
)

// TestWakuEdgeToJSWaku is the Waku edge's acceptance test: two communities,
// one plain and one token-gated (encrypted archives; status-go sends its
// magnet link the same way, SendPublic with no hash-ratchet wrap), are
// registered, messages ingested, archives built, seeded and announced by the
// in-process fleet; two Waku edge replicas (real wakupeers, each with its
// own node key, js-waku their static peer) share the announcements, and
// js-waku, which derives the chat keys and content topics itself, opens
// every one on both chats. The Go side then unwraps the ProtocolMessage and
// verifies the AMM as a member would: type 43, signed by the community, the
// announced clock, and the magnet's infohash is the committed build's.
func TestWakuEdgeToJSWaku(t *testing.T) {
	c := newCluster(t)
	const iv = 4 * time.Second
	now := uint64(time.Now().Unix())
	since := now - 3*uint64(iv/time.Second)
	plain := c.register(iv, since)
	gated := fixture.Community(iv, since, archive.Topic{9, 9, 9, 9})
	rk := archive.RatchetKey{Timestamp: uint64(time.Now().UnixMilli()), Key: bytes.Repeat([]byte{7}, 32)}
	gated.Encrypted, gated.InstallationID, gated.RatchetKey = true, "f0e1d2c3-archivefleet-test", &rk
	if err := registry.New(c.ctl.Communities).Put(context.Background(), gated); err != nil {
		t.Fatal(err)
	}
	coms := []*registry.Community{plain, gated}
	var chats []string
	for _, com := range coms {
		chats = append(chats, wakuedge.Chats(com.ID.String())...)
	}
	js := testenv.StartJSRelay(t, "WAKU_SYM_CHATS="+strings.Join(chats, ","))

	// Two replicas, as deployed: both consume the one durable consumer, so
	// each announcement is sent by one of them.
	topic := wakuwire.DefaultCommunityShard
	signers := map[string]int{}
	var peers []*wakupeer.Peer
	for i := range 2 {
		keyFile := filepath.Join(t.TempDir(), "nodekey")
		edge, peer, err := newWakuEdge(c.ctx, c.bus(), Waku{Listen: DefaultFleetWakuListen, StaticPeers: strings.Join(js.Ready.Addrs, ","),
			Cluster: DefaultWakuCluster, Shards: DefaultWakuShards, MinPeers: 1, InstallationID: "fleet-test", MaxPeers: DefaultWakuMaxPeers},
			keyFile, c.logger(fmt.Sprintf("waku%d", i)), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { peer.Close() })
		c.run(fmt.Sprintf("waku%d", i), edge.Run)
		peers = append(peers, peer)
		nodeKey, err := wakupeer.LoadOrCreateKey(keyFile)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := nodeKey.Raw()
		pub := secp256k1.PrivKeyFromBytes(raw).PubKey()
		signers[hex.EncodeToString(pub.SerializeUncompressed())] = i
		signers[hex.EncodeToString(pub.SerializeCompressed())] = i
	}
	for end := time.Now().Add(20 * time.Second); peers[0].TopicPeers(topic) < 1 || peers[1].TopicPeers(topic) < 1 ||
		js.Call(map[string]any{"op": "peers"}).TopicPeers < 2; {
		if time.Now().After(end) {
			t.Fatal("js-waku and the two edges never shared the shard")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Time the path from the seeder's seeding-started event to js receipt.
	seeding := make(chan time.Time, 8)
	sub, err := c.ctl.NC.Subscribe(bus.SubjectSeeding(plain.ID.String()), func(*nats.Msg) { seeding <- time.Now() })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	c.archiver()
	for _, com := range coms {
		if res := ingestNATS(t, c.ctl, com, messages(com, 60, since, now)); res.Stored != 60 {
			t.Fatalf("stored %d of 60", res.Stored)
		}
	}
	c.scheduler()
	c.seeder("s1")
	c.announcer()

	got := map[string]testenv.JSRelayLine{}
	deadline := time.After(90 * time.Second)
	for len(got) < len(chats) {
		select {
		case l := <-js.Events:
			if l.Event == "chat" {
				if _, dup := got[l.Chat]; !dup {
					got[l.Chat] = l
				}
			}
		case <-deadline:
			t.Fatalf("js-waku received %d of %d chats", len(got), len(chats))
		}
	}
	var seededAt time.Time
	select {
	case seededAt = <-seeding:
	default:
	}

	stream, err := c.ctl.JS.Stream(context.Background(), bus.StreamAnnounced)
	if err != nil {
		t.Fatal(err)
	}
	sentBy := map[int]bool{}
	for _, com := range coms {
		cid := com.ID.String()
		st, _, err := (&state.Store{KV: c.ctl.State}).GetBuild(context.Background(), cid)
		if err != nil {
			t.Fatal(err)
		}
		last, err := stream.GetLastMsgForSubject(context.Background(), bus.SubjectAnnounced(cid))
		if err != nil {
			t.Fatal(err)
		}
		var clock uint64
		for _, chat := range wakuedge.Chats(cid) {
			l := got[chat]
			if l.PubsubTopic != topic || l.ContentTopic != wakuwire.ChatContentTopic(chat) {
				t.Fatalf("%s: received on %s / %s", chat, l.PubsubTopic, l.ContentTopic)
			}
			edge, ok := signers[l.SignerHex]
			if !ok {
				t.Fatalf("%s: js-waku recovered signer %s, not an edge's node key", chat, l.SignerHex)
			}
			sentBy[edge] = true
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
		if err != nil || ws.Clock != clock || len(ws.Hashes) != 2 || ws.RelayPeers < 1 {
			t.Fatalf("waku state %+v %v", ws, err)
		}
		for i, chat := range wakuedge.Chats(cid) {
			if got[chat].HashHex != ws.Hashes[i] {
				t.Fatalf("%s: js-waku hash %s, ours %s", chat, got[chat].HashHex, ws.Hashes[i])
			}
		}
	}
	t.Logf("announcements sent by edge replicas %v", slices.Collect(maps.Keys(sentBy)))
	if !seededAt.IsZero() {
		pc := wakuedge.Chats(plain.ID.String())
		first := got[pc[0]].At
		if got[pc[1]].At.Before(first) {
			first = got[pc[1]].At
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
