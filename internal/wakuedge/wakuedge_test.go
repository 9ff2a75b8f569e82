package wakuedge

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/archivefleet/archivefleet/internal/announcer"
	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/testenv"
	"github.com/archivefleet/archivefleet/internal/waku/lightpush"
	"github.com/archivefleet/archivefleet/internal/waku/node"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
)

type published struct {
	topic string
	m     *wakuwire.Message
}

type fakePeer struct {
	mu    sync.Mutex
	peers int
	sent  []published
}

func (p *fakePeer) Publish(_ context.Context, topic string, m *wakuwire.Message) ([32]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent = append(p.sent, published{topic, m})
	return wakuwire.Hash(topic, m), nil
}

func (p *fakePeer) LightPush(context.Context, peer.AddrInfo, string, *wakuwire.Message) (lightpush.Result, error) {
	return lightpush.Result{}, errors.New("fakePeer has no lightpush")
}

func (p *fakePeer) TopicPeers(string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peers
}

func (p *fakePeer) take() []published {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.sent
	p.sent = nil
	return s
}

func community(t *testing.T, reg *registry.Registry, shard *uint16) (*registry.Community, *secp256k1.PrivateKey) {
	t.Helper()
	k, err := secp256k1.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	var id archive.CommunityID
	copy(id[:], k.PubKey().SerializeCompressed())
	com := &registry.Community{ID: id, Since: 1, Shard: shard}
	if err := reg.Put(context.Background(), com); err != nil {
		t.Fatal(err)
	}
	return com, k
}

func event(t *testing.T, com *registry.Community, key *secp256k1.PrivateKey, clock uint64) bus.Raw {
	t.Helper()
	magnet := "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567"
	msg, err := announcer.BuildMessage(key.Serialize(), clock, magnet)
	if err != nil {
		t.Fatal(err)
	}
	h := nats.Header{}
	h.Set(bus.HeaderClock, strconv.FormatUint(clock, 10))
	h.Set(bus.HeaderInfohash, "0123456789abcdef0123456789abcdef01234567")
	return bus.Raw{Subject: bus.SubjectAnnounced(com.ID.String()), Header: h, Data: msg}
}

// TestDedupAndSnooze: too few peers snoozes (no failure, nothing sent); a
// sent clock is recorded and neither it nor an older one is sent again; a
// newer one is; both chats get the same AMM, signed by the edge's key; a
// community's shard picks the pubsub topic.
func TestDedupAndSnooze(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{Memory: true})
	reg := registry.New(b.Communities)
	peer := &fakePeer{}
	signer, _ := secp256k1.GeneratePrivateKey()
	s, err := New(Service{Bus: b, Registry: reg, Peer: peer, Logger: testenv.Logger(),
		Config: Config{InstallationID: "edge-test", MinPeers: 2, Signer: signer, NoPeersSnooze: time.Second}}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	com, key := community(t, reg, nil)
	c := com.ID.String()

	peer.peers = 1
	err = s.Handle(ctx, event(t, com, key, 100), bus.Delivery{})
	var snooze *bus.SnoozeError
	if !errors.As(err, &snooze) || snooze.Delay < time.Second/2 || snooze.Delay > time.Second || len(peer.take()) != 0 {
		t.Fatalf("1 peer of 2: %v", err)
	}
	if n := testutil.ToFloat64(s.noPeers); n != 1 {
		t.Fatalf("no-peer snoozes %v", n)
	}

	peer.peers = 2
	ev := event(t, com, key, 100)
	if err := s.Handle(ctx, ev, bus.Delivery{}); err != nil {
		t.Fatal(err)
	}
	sent := peer.take()
	if len(sent) != 2 {
		t.Fatalf("sent %d messages, want 2", len(sent))
	}
	for i, chat := range []string{c + "-memberUpdate", c + "-magnetlinks"} {
		p := sent[i]
		if p.topic != wakuwire.DefaultCommunityShard || p.m.ContentTopic != wakuwire.ChatContentTopic(chat) || p.m.Version != 1 {
			t.Fatalf("%s: topic %s content topic %s version %d", chat, p.topic, p.m.ContentTopic, p.m.Version)
		}
		env, err := wakuwire.OpenSymmetric(p.m.Payload, wakuwire.ChatKey(chat))
		if err != nil {
			t.Fatalf("%s: open: %v", chat, err)
		}
		if !bytes.Equal(env.Signer, signer.PubKey().SerializeUncompressed()) {
			t.Fatalf("%s: signer %x", chat, env.Signer)
		}
		inst, amm, err := wakuwire.UnwrapPublic(env.Data)
		if err != nil || inst != "edge-test" || !bytes.Equal(amm, ev.Data) {
			t.Fatalf("%s: unwrap %q %v", chat, inst, err)
		}
		v, err := announcer.Verify(amm)
		if err != nil || v.Community != com.ID || v.Clock != 100 {
			t.Fatalf("%s: verify %+v %v", chat, v, err)
		}
	}
	if n := testutil.ToFloat64(s.published.WithLabelValues("memberUpdate")) + testutil.ToFloat64(s.published.WithLabelValues("magnetlinks")); n != 2 {
		t.Fatalf("published metric %v", n)
	}
	st, _, err := s.State.GetWaku(ctx, c)
	if err != nil || st.Clock != 100 || len(st.Hashes) != 2 {
		t.Fatalf("state %+v %v", st, err)
	}

	// Redelivered, or an older clock: acknowledged, not sent.
	for _, clock := range []uint64{100, 99} {
		if err := s.Handle(ctx, event(t, com, key, clock), bus.Delivery{}); err != nil || len(peer.take()) != 0 {
			t.Fatalf("clock %d after 100: %v", clock, err)
		}
	}
	if err := s.Handle(ctx, event(t, com, key, 101), bus.Delivery{}); err != nil || len(peer.take()) != 2 {
		t.Fatalf("clock 101: %v", err)
	}

	// Shard 64.
	shard := uint16(64)
	com64, key64 := community(t, reg, &shard)
	if err := s.Handle(ctx, event(t, com64, key64, 5), bus.Delivery{}); err != nil {
		t.Fatal(err)
	}
	if sent := peer.take(); len(sent) != 2 || sent[0].topic != "/waku/2/rs/16/64" {
		t.Fatalf("shard 64: %+v", sent)
	}

	// Malformed: dead-lettered at once.
	bad := event(t, com, key, 200)
	bad.Header.Set(bus.HeaderClock, "x")
	if err := s.Handle(ctx, bad, bus.Delivery{}); !bus.IsPermanent(err) {
		t.Fatalf("bad clock: %v", err)
	}
}

// startPeer starts a real Waku node on 127.0.0.1.
func startPeer(t *testing.T, cfg node.Config) *node.Node {
	t.Helper()
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.Logger = testenv.Logger()
	p, err := node.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func p2pAddr(p *node.Node) string { return p.Addrs()[0].String() + "/p2p/" + p.ID().String() }

// TestLightPushAndProtectedShard runs the edge on real peers: its own peer
// has no relay peer on the community's shard (64, protected, the edge holds
// its key), so the announcement reaches the member only through a lightpush
// service node (our Waku node serving lightpush v3; not an independent
// implementation) that relays it. The member receives both chats' messages
// with a meta that verifies against the shard's public key. With the
// service node gone the announcement waits; lightpush refusals are counted.
func TestLightPushAndProtectedShard(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{Memory: true})
	reg := registry.New(b.Communities)
	shard := uint16(64)
	topic := wakuwire.ShardTopic(16, shard)
	service := startPeer(t, node.Config{LightPushService: true, Shards: []uint16{32, shard}})
	member := startPeer(t, node.Config{Shards: []uint16{shard}, StaticPeers: []string{p2pAddr(service)}})
	// The edge relays 32 and 64 but has no static peer: nobody relays with it.
	edgePeer := startPeer(t, node.Config{Shards: []uint16{32, shard}})
	testenv.Eventually(t, 15*time.Second, func() bool { return service.MeshPeers(topic) == 1 }, "service and member meshed")
	received, cancel, err := member.Subscribe(topic)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()

	shardKey, _ := secp256k1.GeneratePrivateKey()
	signer, _ := secp256k1.GeneratePrivateKey()
	s, err := New(Service{Bus: b, Registry: reg, Peer: edgePeer, Logger: testenv.Logger(), Config: Config{
		InstallationID: "edge-test", MinPeers: 1, Signer: signer, NoPeersSnooze: time.Second,
		LightPushNodes: []peer.AddrInfo{{ID: service.ID(), Addrs: service.Host().Addrs()}},
		ShardKeys:      map[uint16]*secp256k1.PrivateKey{shard: shardKey},
	}}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	com, key := community(t, reg, &shard)
	c := com.ID.String()
	if err := s.Handle(t.Context(), event(t, com, key, 7), bus.Delivery{}); err != nil {
		t.Fatalf("lightpush delivery: %v", err)
	}
	st, _, err := s.State.GetWaku(t.Context(), c)
	// Relay peers are counted before sending; the lightpush connection then
	// makes the edge a relay peer of the service node too (so it reports 2).
	if err != nil || st.Clock != 7 || st.RelayPeers != 0 || st.LightPushAccepted != 2 || st.LightPushRelayPeers < 2 {
		t.Fatalf("state %+v, %v; want clock 7, 0 relay peers, 2 pushes accepted, each relayed", st, err)
	}
	got := map[string]bool{}
	for range Chats(c) {
		select {
		case r := <-received:
			if !wakuwire.VerifyMeta(topic, r.Message, shardKey.PubKey()) {
				t.Fatalf("meta %x does not verify with the shard key", r.Message.Meta)
			}
			if other, _ := secp256k1.GeneratePrivateKey(); wakuwire.VerifyMeta(topic, r.Message, other.PubKey()) {
				t.Fatal("meta verifies with another key")
			}
			got[r.Message.ContentTopic] = true
			if h := hexHash(r.Hash); !slices.Contains(st.Hashes, h) {
				t.Fatalf("member got hash %s, edge recorded %v", h, st.Hashes)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("member received %d of 2 messages", len(got))
		}
	}
	for _, chat := range Chats(c) {
		if !got[wakuwire.ChatContentTopic(chat)] {
			t.Fatalf("no message for %s", chat)
		}
	}
	if n := testutil.ToFloat64(s.pushes.WithLabelValues("200")); n != 2 {
		t.Fatalf("lightpush 200 counted %v times", n)
	}

	// The service node goes away: no relay peer, no lightpush; the
	// announcement waits.
	service.Close()
	testenv.Eventually(t, 15*time.Second, func() bool { return edgePeer.TopicPeers(topic) == 0 }, "edge without relay peers")
	err = s.Handle(t.Context(), event(t, com, key, 8), bus.Delivery{})
	var snooze *bus.SnoozeError
	if !errors.As(err, &snooze) || !strings.Contains(snooze.Error(), "lightpush delivered 0 of 2") {
		t.Fatalf("service node gone: %v, want a snooze", err)
	}
	if n := testutil.ToFloat64(s.pushes.WithLabelValues("error")); n != 2 {
		t.Fatalf("lightpush errors counted %v times", n)
	}
	if st, _, _ := s.State.GetWaku(t.Context(), c); st.Clock != 7 {
		t.Fatalf("clock 8 recorded as sent: %+v", st)
	}
}

func hexHash(h [32]byte) string { return hex.EncodeToString(h[:]) }
