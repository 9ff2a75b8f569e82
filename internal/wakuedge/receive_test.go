package wakuedge

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/messages"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/testenv"
	"github.com/archivefleet/archivefleet/internal/waku/node"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
)

// TestRecord: a received message becomes status-go's archive record, or is
// refused with the reason counted for it. (The end-to-end check against
// js-waku's own computation is TestWakuReceiveToArchive in internal/fleet.)
func TestRecord(t *testing.T) {
	chat := "0x02" + "0f" + "-memberUpdate"
	key := wakuwire.ChatKey(chat)
	signer, _ := secp256k1.GeneratePrivateKey()
	ts := time.Date(2026, 11, 26, 12, 0, 0, 999_999_999, time.UTC)
	seal := func(k []byte, s *secp256k1.PrivateKey) []byte {
		p, err := wakuwire.SealSymmetric([]byte("protocol message"), k, s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	msg := func(payload []byte, version uint32, at int64) *wakuwire.Message {
		return &wakuwire.Message{Payload: payload, ContentTopic: wakuwire.ChatContentTopic(chat), Version: version, Timestamp: at}
	}
	for _, tc := range []struct {
		name   string
		m      *wakuwire.Message
		reason string
	}{
		{"good", msg(seal(key, signer), 1, ts.UnixNano()), ""},
		{"version 0", msg(seal(key, signer), 0, ts.UnixNano()), dropMalformed},
		{"no timestamp", msg(seal(key, signer), 1, 0), dropMalformed},
		{"another chat's key", msg(seal(wakuwire.ChatKey(chat+"x"), signer), 1, ts.UnixNano()), dropUndecryptable},
		{"not sealed", msg([]byte("plain text, not rfc26"), 1, ts.UnixNano()), dropUndecryptable},
		{"unsigned", msg(seal(key, nil), 1, ts.UnixNano()), dropUnsigned},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, err := Record("/waku/2/rs/16/32", tc.m, chat, key)
			if tc.reason != "" {
				var na *NotArchived
				if !errors.As(err, &na) || na.Reason != tc.reason {
					t.Fatalf("err %v, want reason %s", err, tc.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			h := wakuwire.Hash("/waku/2/rs/16/32", tc.m)
			env, _ := wakuwire.OpenSymmetric(tc.m.Payload, key)
			if !bytes.Equal(rec.Sig, signer.PubKey().SerializeUncompressed()) || rec.Timestamp != uint64(ts.Unix()) ||
				rec.Topic != registry.ChatTopic(chat) || string(rec.Payload) != "protocol message" ||
				!bytes.Equal(rec.Padding, env.Padding) || len(rec.Padding) == 0 || !bytes.Equal(rec.Hash, h[:]) {
				t.Fatalf("record %+v", rec)
			}
			if err := rec.Validate(); err != nil {
				t.Fatalf("record does not validate: %v", err)
			}
		})
	}
}

// TestBackfill: messages relayed while the edge was not there are on two
// Store v3 nodes (our Waku node's store service: not an independent
// implementation; js-waku's store client is its independent test, in
// internal/waku/node): A heard 150 (more than a page), B only one, which A
// never saw. The edge back-fills the community from both and ingests the
// union; a second back-fill starts near the first one's end and stores
// nothing new; with A down the back-fill fails and the progress stays.
func TestBackfill(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{Memory: true})
	reg := registry.New(b.Communities)
	com, _ := community(t, reg, nil)
	legacy := com.ID.String() + "0b8f5f1e-2d6c-4c41-9d67-2b7f0c1a9e55"
	com.Chats = []string{legacy}
	com.Since = uint64(time.Now().Add(-3 * time.Hour).Unix())
	if err := reg.Put(t.Context(), com); err != nil {
		t.Fatal(err)
	}
	topic := wakuwire.DefaultCommunityShard
	storeA := startPeer(t, node.Config{StoreService: true})
	publisher := startPeer(t, node.Config{StaticPeers: []string{p2pAddr(storeA)}})
	storeB := startPeer(t, node.Config{StoreService: true}) // alone
	testenv.Eventually(t, 60*time.Second, func() bool { return storeA.MeshPeers(topic) == 1 }, "publisher and store A meshed")

	member, _ := secp256k1.GeneratePrivateKey()
	want := map[string]bool{}
	keys := map[string][]byte{} // ChatKey is a slow KDF (PBKDF2), once per chat
	// Relays and store nodes take only messages stamped within 20 s of
	// their clock (nwaku's RLN clock gap and MaxMessageTimestampVariance,
	// which ours follow): each is stamped as it is sent.
	publish := func(p *node.Node, chat string) {
		if keys[chat] == nil {
			keys[chat] = wakuwire.ChatKey(chat)
		}
		at := time.Now()
		payload, err := wakuwire.SealSymmetric([]byte("hello "+at.String()), keys[chat], member)
		if err != nil {
			t.Fatal(err)
		}
		h, err := p.Publish(t.Context(), topic, &wakuwire.Message{Payload: payload, ContentTopic: wakuwire.ChatContentTopic(chat),
			Version: 1, Timestamp: at.UnixNano()})
		if err != nil {
			t.Fatal(err)
		}
		want[hexHash(h)] = true
	}
	for i := range 150 {
		chat := registry.UniversalChatID(com.ID)
		if i%3 == 0 {
			chat = legacy
		}
		publish(publisher, chat)
	}
	publish(storeB, registry.UniversalChatID(com.ID))

	st := &messages.Store{Bus: b, Communities: reg, Logger: testenv.Logger()}
	edgePeer := startPeer(t, node.Config{})
	signer, _ := secp256k1.GeneratePrivateKey()
	nodes := []peer.AddrInfo{{ID: storeA.ID(), Addrs: storeA.Host().Addrs()}, {ID: storeB.ID(), Addrs: storeB.Host().Addrs()}}
	s, err := New(Service{Bus: b, Registry: reg, Peer: edgePeer, Listen: edgePeer, Ingest: st, StoreClient: edgePeer, Logger: testenv.Logger(),
		Config: Config{Signer: signer, StoreNodes: nodes}}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	c := com.ID.String()
	var stored int
	testenv.Eventually(t, 60*time.Second, func() bool {
		bf, rev, err := s.State.GetBackfill(t.Context(), c)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.backfillCommunity(t.Context(), com, bf, rev, time.Now()); err != nil {
			t.Fatalf("back-fill: %v", err)
		}
		bf, _, _ = s.State.GetBackfill(t.Context(), c)
		stored += bf.Stored
		return stored == len(want)
	}, "both stores hold their messages, and back-fill takes the union")

	bf, rev, _ := s.State.GetBackfill(t.Context(), c)
	if bf.Pages < 3 || bf.Messages < len(want) {
		t.Fatalf("progress %+v: want at least 3 pages (150 on A at 100 a page, 1 on B) and %d messages", bf, len(want))
	}
	if err := s.backfillCommunity(t.Context(), com, bf, rev, time.Now()); err != nil {
		t.Fatal(err)
	}
	again, rev, _ := s.State.GetBackfill(t.Context(), c)
	if again.Stored != 0 || !again.Upto.After(bf.Upto) {
		t.Fatalf("second back-fill %+v after %+v: want nothing new and a later end", again, bf)
	}

	storeA.Close()
	if err := s.backfillCommunity(t.Context(), com, again, rev, time.Now()); err == nil {
		t.Fatal("back-fill with store node A down succeeded")
	}
	if bf3, _, _ := s.State.GetBackfill(t.Context(), c); !bf3.Upto.Equal(again.Upto) {
		t.Fatalf("a failed back-fill moved the progress: %+v", bf3)
	}
	n := 0
	for m, err := range st.Source(com.ID).Messages(t.Context(), com.Since, uint64(time.Now().Add(time.Hour).Unix())) {
		if err != nil {
			t.Fatal(err)
		}
		if !want[hex.EncodeToString(m.Hash)] {
			t.Fatalf("stored a message nobody published: %x", m.Hash)
		}
		n++
	}
	if n != len(want) {
		t.Fatalf("stored %d messages, published %d", n, len(want))
	}
}

// flakyIngest fails its first calls as an outage would (the real store
// behind it, on a real NATS, takes the rest).
type flakyIngest struct {
	Ingester
	mu    sync.Mutex
	fails int
}

func (f *flakyIngest) Ingest(ctx context.Context, c archive.CommunityID, msgs []archive.Message) (messages.IngestResult, error) {
	f.mu.Lock()
	fail := f.fails > 0
	f.fails--
	f.mu.Unlock()
	if fail {
		return messages.IngestResult{}, errors.New("nats: no responders available for request")
	}
	return f.Ingester.Ingest(ctx, c, msgs)
}

// TestReceiveLive: the running edge hears a community's chats from a relay
// peer and ingests each message once, through an ingest outage (retried
// with back-off, nothing lost); a message for an unregistered chat and an
// unsigned one are counted, not stored; a chat added to the registry while
// running is heard at once.
func TestReceiveLive(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{Memory: true})
	reg := registry.New(b.Communities)
	com, _ := community(t, reg, nil)
	com.Since = uint64(time.Now().Add(-time.Hour).Unix())
	if err := reg.Put(t.Context(), com); err != nil {
		t.Fatal(err)
	}
	topic := wakuwire.DefaultCommunityShard
	edgePeer := startPeer(t, node.Config{})
	member := startPeer(t, node.Config{StaticPeers: []string{p2pAddr(edgePeer)}})
	testenv.Eventually(t, 15*time.Second, func() bool { return edgePeer.MeshPeers(topic) == 1 }, "meshed")
	st := &messages.Store{Bus: b, Communities: reg, Logger: testenv.Logger()}
	signer, _ := secp256k1.GeneratePrivateKey()
	metrics := prometheus.NewRegistry()
	s, err := New(Service{Bus: b, Registry: reg, Peer: edgePeer, Listen: edgePeer, Ingest: &flakyIngest{Ingester: st, fails: 2},
		Logger: testenv.Logger(), Config: Config{Signer: signer, MinPeers: 1}}, metrics)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	testenv.Eventually(t, 15*time.Second, func() bool {
		return len(s.routes.lookup(wakuwire.ChatContentTopic(registry.UniversalChatID(com.ID)))) == 1
	}, "routes loaded")

	key, _ := secp256k1.GeneratePrivateKey()
	send := func(chat string, signed bool) {
		var k *secp256k1.PrivateKey
		if signed {
			k = key
		}
		payload, err := wakuwire.SealSymmetric([]byte("m "+chat), wakuwire.ChatKey(chat), k)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := member.Publish(t.Context(), topic, &wakuwire.Message{Payload: payload, ContentTopic: wakuwire.ChatContentTopic(chat),
			Version: 1, Timestamp: time.Now().UnixNano()}); err != nil {
			t.Fatal(err)
		}
	}
	for range 20 {
		send(registry.UniversalChatID(com.ID), true)
	}
	legacy := com.ID.String() + "5d0c1f7e-9a3b-4e2d-8c6f-1b2a3c4d5e6f"
	send(legacy, true) // not registered yet: foreign
	send(registry.UniversalChatID(com.ID), false)
	outcome := func(o string) float64 { return testutil.ToFloat64(s.received.WithLabelValues(o)) }
	// Relay validation runs in parallel, so the last two may be counted
	// after the twentieth is stored: wait for all three outcomes.
	testenv.Eventually(t, 15*time.Second, func() bool {
		return outcome("stored") == 20 && outcome("foreign") == 1 && outcome("unsigned") == 1
	}, "20 stored through the outage, 1 foreign, 1 unsigned")

	com.Chats = []string{legacy}
	if err := reg.Put(t.Context(), com); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, func() bool { return len(s.routes.lookup(wakuwire.ChatContentTopic(legacy))) == 1 }, "the new chat routed")
	send(legacy, true)
	testenv.Eventually(t, 15*time.Second, func() bool { return outcome("stored") == 21 }, "the new chat's message stored")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestReceiveReplicas: two edge replicas hear the same messages; each is
// stored once, the other replica's copy is a duplicate, nothing else.
func TestReceiveReplicas(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{Memory: true})
	reg := registry.New(b.Communities)
	com, _ := community(t, reg, nil)
	com.Since = uint64(time.Now().Add(-time.Hour).Unix())
	if err := reg.Put(t.Context(), com); err != nil {
		t.Fatal(err)
	}
	topic := wakuwire.DefaultCommunityShard
	member := startPeer(t, node.Config{})
	st := &messages.Store{Bus: b, Communities: reg, Logger: testenv.Logger()}
	var edges []*Service
	for range 2 {
		p := startPeer(t, node.Config{StaticPeers: []string{p2pAddr(member)}})
		signer, _ := secp256k1.GeneratePrivateKey()
		s, err := New(Service{Bus: b, Registry: reg, Peer: p, Listen: p, Ingest: st, Logger: testenv.Logger(),
			Config: Config{Signer: signer}}, prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { s.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		edges = append(edges, s)
	}
	chat := registry.UniversalChatID(com.ID)
	testenv.Eventually(t, 15*time.Second, func() bool {
		return member.MeshPeers(topic) == 2 && len(edges[0].routes.lookup(wakuwire.ChatContentTopic(chat))) == 1 &&
			len(edges[1].routes.lookup(wakuwire.ChatContentTopic(chat))) == 1
	}, "both replicas meshed and routed")

	key, _ := secp256k1.GeneratePrivateKey()
	const n = 30
	for i := range n {
		payload, err := wakuwire.SealSymmetric([]byte{byte(i)}, wakuwire.ChatKey(chat), key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := member.Publish(t.Context(), topic, &wakuwire.Message{Payload: payload, ContentTopic: wakuwire.ChatContentTopic(chat),
			Version: 1, Timestamp: time.Now().UnixNano()}); err != nil {
			t.Fatal(err)
		}
	}
	sum := func(o string) float64 {
		return testutil.ToFloat64(edges[0].received.WithLabelValues(o)) + testutil.ToFloat64(edges[1].received.WithLabelValues(o))
	}
	testenv.Eventually(t, 15*time.Second, func() bool { return sum("stored")+sum("duplicate") == 2*n }, "every message stored once and seen twice")
	if sum("stored") != n || sum("duplicate") != n {
		t.Fatalf("stored %v, duplicates %v; want %d each", sum("stored"), sum("duplicate"), n)
	}
	for _, o := range []string{"failed", "refused", "foreign", "overflow"} {
		if v := sum(o); v != 0 {
			t.Fatalf("%s: %v", o, v)
		}
	}
}
