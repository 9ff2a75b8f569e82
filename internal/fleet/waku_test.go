package fleet

import (
	"bytes"
	"context"
	"crypto/rand"
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

	"github.com/archivefleet/archivefleet/internal/announcer"
	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/testenv"
	"github.com/archivefleet/archivefleet/internal/waku/node"
	"github.com/archivefleet/archivefleet/internal/wakuedge"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
)

// TestWakuEdgeToJSWaku is the Waku edge's acceptance test: two communities,
// one plain and one token-gated (encrypted archives; status-go sends its
// magnet link the same way, SendPublic with no hash-ratchet wrap), are
// registered, messages ingested, archives built, seeded and announced by the
// in-process fleet; two Waku edge replicas (real Waku nodes, each with its
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
	gatedKey := fixture.Key()
	gated := fixture.CommunityFromKey(gatedKey, iv, since, archive.Topic{9, 9, 9, 9})
	rk := archive.RatchetKey{Timestamp: uint64(time.Now().UnixMilli()), Key: bytes.Repeat([]byte{7}, 32)}
	gated.Encrypted, gated.InstallationID, gated.RatchetKey = true, "f0e1d2c3-archivefleet-test", &rk
	c.put(gated, gatedKey)
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
	var peers []*node.Node
	for i := range 2 {
		keyFile := filepath.Join(t.TempDir(), "nodekey")
		edge, peer, err := newWakuEdge(c.ctx, c.bus(), Waku{Listen: DefaultFleetWakuListen, StaticPeers: strings.Join(js.Ready.Addrs, ","),
			Cluster: DefaultWakuCluster, Shards: DefaultWakuShards, MinPeers: 1, InstallationID: "fleet-test", MaxPeers: DefaultWakuMaxPeers},
			keyFile, nil, c.logger(fmt.Sprintf("waku%d", i)), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { peer.Close() })
		c.run(fmt.Sprintf("waku%d", i), edge.Run)
		peers = append(peers, peer)
		nodeKey, err := node.LoadOrCreateKey(keyFile)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := nodeKey.Raw()
		pub := secp256k1.PrivKeyFromBytes(raw).PubKey()
		signers[hex.EncodeToString(pub.SerializeUncompressed())] = i
		signers[hex.EncodeToString(pub.SerializeCompressed())] = i
	}
	testenv.Eventually(t, 20*time.Second, func() bool {
		return peers[0].TopicPeers(topic) >= 1 && peers[1].TopicPeers(topic) >= 1 && js.Call(map[string]any{"op": "peers"}).TopicPeers >= 2
	}, "js-waku and the two edges to share the shard")

	// Time the path from the seeder's seeding-started event to js receipt.
	seeding := make(chan time.Time, 8)
	sub, err := c.ctl.NC.Subscribe(bus.SubjectSeeding(plain.ID.String()), func(*nats.Msg) { seeding <- time.Now() })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	c.archiver()
	for _, com := range coms {
		if res := ingestNATS(t, c.ctl, com, sampleMessages(com, 60, since, now)); res.Stored != 60 {
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
			v, err := announcer.Verify(amm)
			if err != nil {
				t.Fatalf("%s: %v", chat, err)
			}
			m, err := metainfo.ParseMagnetUri(v.Magnet)
			if err != nil {
				t.Fatal(err)
			}
			if v.Community != com.ID || v.Clock == 0 || last.Header.Get(bus.HeaderClock) != strconv.FormatUint(v.Clock, 10) || m.InfoHash.HexString() != st.InfoHash {
				t.Fatalf("%s: verified %+v (infohash %s), want community %s, clock %s, infohash %s", chat, v, m.InfoHash.HexString(), com.ID,
					last.Header.Get(bus.HeaderClock), st.InfoHash)
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
	edge, peer, err := newWakuEdge(c.ctx, b, w, filepath.Join(t.TempDir(), "nodekey"), c.archiver(), c.logger("waku"), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	msg, err := announcer.BuildMessage(c.keys[com.ID], 7, "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567")
	if err != nil {
		t.Fatal(err)
	}
	ev := bus.Raw{Subject: bus.SubjectAnnounced(com.ID.String()), Header: nats.Header{}, Data: msg}
	ev.Header.Set(bus.HeaderClock, "7")
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

// TestWakuReceiveToArchive is #11's end-to-end test: a js-waku relay node
// publishes chat messages the way a Status client's transport does (js-waku's
// symmetric encoder, the chat key, a member's signing key) on the universal
// chat and a legacy channel chat, one large (over the store's inline size),
// plus one on a foreign chat, one under a wrong key and one unsigned. The
// edge hears them and ingests them; the fleet builds, seeds and announces
// over Waku; js-waku receives the announcement; the torrent fetched from
// its magnet holds exactly the good messages, each record equal field by
// field to what js-waku computed (signer, timestamp, topic, data, padding,
// message hash), and none of the others.
func TestWakuReceiveToArchive(t *testing.T) {
	c := newCluster(t)
	const iv = 4 * time.Second
	start := time.Now().Add(-2 * iv).Truncate(time.Second)
	key := fixture.Key()
	com := fixture.CommunityFromKey(key, iv, uint64(start.Unix()))
	cid := com.ID.String()
	legacy := cid + "3f1a9e2c-7b64-4d3b-9a51-6c0d2e8f4b17"
	com.Chats = []string{legacy}
	c.put(com, key)
	js := testenv.StartJSRelay(t, "WAKU_SYM_CHATS="+strings.Join(wakuedge.Chats(cid), ","))
	st := c.archiver()
	reg := prometheus.NewRegistry()
	w := DefaultWaku()
	w.Listen, w.StaticPeers, w.InstallationID = DefaultFleetWakuListen, strings.Join(js.Ready.Addrs, ","), "fleet-test"
	edge, peer, err := newWakuEdge(c.ctx, c.bus(), w, filepath.Join(t.TempDir(), "nodekey"), st, c.logger("waku"), reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	c.run("waku", edge.Run)
	topic := wakuwire.DefaultCommunityShard
	testenv.Eventually(t, 20*time.Second, func() bool {
		return peer.MeshPeers(topic) >= 1 && js.Call(map[string]any{"op": "peers"}).Mesh >= 1
	}, "js-waku and the edge to mesh")

	member, _ := secp256k1.GeneratePrivateKey()
	memberKey := hex.EncodeToString(member.Serialize())
	send := func(req map[string]any) testenv.JSRelayLine {
		t.Helper()
		req["op"] = "sendChat"
		l := js.Call(req)
		if l.Error != "" || l.Recipients < 1 {
			t.Fatalf("js-waku sendChat: %s (recipients %d)", l.Error, l.Recipients)
		}
		return l
	}
	var want []testenv.JSRelayLine
	span := 2 * iv
	for i := range 24 {
		chat := registry.UniversalChatID(com.ID)
		if i%4 == 3 {
			chat = legacy
		}
		size := 40 + i*37
		if i == 5 {
			size = 300 << 10 // stored as an object, not inline
		}
		payload := make([]byte, size)
		rand.Read(payload)
		at := start.Add(span * time.Duration(i) / 24)
		want = append(want, send(map[string]any{"chat": chat, "payloadHex": hex.EncodeToString(payload), "timestampMs": at.UnixMilli(),
			"sigPrivKeyHex": memberKey}))
	}
	mid := start.Add(iv / 2).UnixMilli()
	foreign := send(map[string]any{"chat": "0x02" + strings.Repeat("ab", 32) + "-memberUpdate", "payloadHex": "01", "timestampMs": mid, "sigPrivKeyHex": memberKey})
	wrongKey := send(map[string]any{"chat": registry.UniversalChatID(com.ID), "payloadHex": "02", "timestampMs": mid, "sigPrivKeyHex": memberKey,
		"keyHex": strings.Repeat("11", 32)})
	unsigned := send(map[string]any{"chat": legacy, "payloadHex": "03", "timestampMs": mid})
	notArchived := map[string]string{foreign.HashHex: "foreign", wrongKey.HashHex: "undecryptable", unsigned.HashHex: "unsigned"}

	received := func(outcome string) float64 {
		return counterValue(t, reg, "archivefleet_waku_received_total", "outcome", outcome)
	}
	for end := time.Now().Add(30 * time.Second); received("stored")+received("late") < float64(len(want)) ||
		received("undecryptable") < 1 || received("unsigned") < 1 || received("foreign") < 1; {
		if time.Now().After(end) {
			t.Fatalf("edge ingested %v + %v late of %d; undecryptable %v, unsigned %v, foreign %v", received("stored"), received("late"),
				len(want), received("undecryptable"), received("unsigned"), received("foreign"))
		}
		time.Sleep(100 * time.Millisecond)
	}

	c.scheduler()
	c.seeder("s1")
	c.announcer()
	var msgs []archive.Message
	deadline := time.Now().Add(90 * time.Second)
	for len(msgs) < len(want) {
		var ann testenv.JSRelayLine
		select {
		case ann = <-js.Events:
		case <-time.After(time.Until(deadline)):
			t.Fatalf("archived %d of %d messages before the deadline", len(msgs), len(want))
		}
		if ann.Event != "chat" || ann.Chat != cid+"-memberUpdate" {
			continue
		}
		pm, _ := hex.DecodeString(ann.PayloadHex)
		_, amm, err := wakuwire.UnwrapPublic(pm)
		if err != nil {
			t.Fatal(err)
		}
		v, err := announcer.Verify(amm)
		if err != nil || v.Community != com.ID {
			t.Fatalf("announcement %+v %v", v, err)
		}
		msgs, _ = download(t, v.Magnet, 30*time.Second)
		t.Logf("announcement clock %d: the torrent holds %d messages", v.Clock, len(msgs))
	}
	byHash := map[string]archive.Message{}
	for _, m := range msgs {
		byHash[hex.EncodeToString(m.Hash)] = m
		if why, bad := notArchived[hex.EncodeToString(m.Hash)]; bad {
			t.Fatalf("the %s message was archived", why)
		}
	}
	if len(byHash) != len(want) || len(msgs) != len(want) {
		t.Fatalf("archived %d messages (%d distinct), js-waku published %d good ones", len(msgs), len(byHash), len(want))
	}
	for i, w := range want {
		m, ok := byHash[w.HashHex]
		if !ok {
			t.Fatalf("message %d (hash %s) not archived", i, w.HashHex)
		}
		ns, _ := strconv.ParseInt(w.TimestampNs, 10, 64)
		for _, f := range []struct{ name, got, want string }{
			{"sig", hex.EncodeToString(m.Sig), w.SignerHex},
			{"timestamp", strconv.FormatUint(m.Timestamp, 10), strconv.FormatInt(ns/1e9, 10)},
			{"topic", hex.EncodeToString(m.Topic[:]), w.TopicHex},
			{"payload", hex.EncodeToString(m.Payload), w.DataHex},
			{"padding", hex.EncodeToString(m.Padding), w.PaddingHex},
		} {
			if f.got != f.want {
				t.Fatalf("message %d: %s is %.80s…, js-waku says %.80s…", i, f.name, f.got, f.want)
			}
		}
		if w.SignerHex != hex.EncodeToString(member.PubKey().SerializeUncompressed()) {
			t.Fatalf("js-waku's signer %s is not the member's key", w.SignerHex)
		}
	}
	t.Logf("%d records equal field by field; chat keys %v derived, %v cached", len(want),
		counterValue(t, reg, "archivefleet_waku_chat_keys_total", "result", "derived"),
		counterValue(t, reg, "archivefleet_waku_chat_keys_total", "result", "hit"))
}

// counterValue reads one labelled counter from reg (0 when absent).
func counterValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
