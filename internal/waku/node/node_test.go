package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/testenv"
	"github.com/archivefleet/archivefleet/internal/waku/relay"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var (
	shard32 = wakuwire.ShardTopic(16, 32)
	shard64 = wakuwire.ShardTopic(16, 64)
)

func quietLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startPeer starts a peer on 127.0.0.1 (TCP and WS, port 0) with fast
// back-off, closed at the end of the test.
func startPeer(t *testing.T, cfg Config) *Node {
	t.Helper()
	if cfg.ListenAddrs == nil {
		cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/tcp/0/ws"}
	}
	if cfg.ReconnectMin == 0 {
		cfg.ReconnectMin, cfg.ReconnectMax = 50*time.Millisecond, 400*time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	p, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return p
}

// tcpAddr is p's TCP address with /p2p (the first listen address).
func tcpAddr(t *testing.T, p *Node) string {
	t.Helper()
	for _, a := range p.Addrs() {
		if _, err := a.ValueForProtocol(0x06); err == nil { // tcp
			if _, err := a.ValueForProtocol(477); err != nil { // not ws
				return a.String()
			}
		}
	}
	t.Fatalf("no tcp address in %v", p.Addrs())
	return ""
}

func wsAddr(t *testing.T, p *Node) string {
	t.Helper()
	for _, a := range p.Addrs() {
		if _, err := a.ValueForProtocol(477); err == nil {
			return a.String()
		}
	}
	t.Fatalf("no ws address in %v", p.Addrs())
	return ""
}

func testMessage(text string) *wakuwire.Message {
	return &wakuwire.Message{
		Payload:      []byte(text),
		ContentTopic: "/waku/1/0x01020304/rfc26",
		Version:      1,
		Timestamp:    time.Now().UnixNano(),
	}
}

func receive(t *testing.T, ch <-chan Received, d time.Duration) Received {
	t.Helper()
	select {
	case r, ok := <-ch:
		if !ok {
			t.Fatal("subscription closed")
		}
		return r
	case <-time.After(d):
		t.Fatalf("no message within %v", d)
	}
	return Received{}
}

func TestRelayMesh(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		n    int
		ws   bool // later peers dial their static peer over WebSocket
	}{
		{"two peers tcp", 2, false},
		{"two peers ws", 2, true},
		{"three peers in a line", 3, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			reg := prometheus.NewRegistry()
			peers := []*Node{startPeer(t, Config{Registerer: reg})}
			for i := 1; i < tc.n; i++ {
				addr := tcpAddr(t, peers[i-1])
				if tc.ws {
					addr = wsAddr(t, peers[i-1])
				}
				peers = append(peers, startPeer(t, Config{StaticPeers: []string{addr}}))
			}
			// A line 0-1-…: the inner peers need both neighbours in their
			// mesh to forward, the ends one.
			for i, p := range peers {
				want := 2
				if i == 0 || i == tc.n-1 {
					want = 1
				}
				testenv.Eventually(t, 10*time.Second, func() bool {
					return p.MeshPeers(shard32) == want && p.Ready(shard32) == nil
				}, fmt.Sprintf("peer %d mesh of %d", i, want))

			}
			subs := make([]<-chan Received, tc.n)
			for i, p := range peers {
				ch, cancel, err := p.Subscribe(shard32)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(cancel)
				subs[i] = ch
			}
			for _, from := range []int{0, tc.n - 1} {
				m := testMessage(fmt.Sprintf("from %d", from))
				hash, err := peers[from].Publish(t.Context(), shard32, m)
				if err != nil {
					t.Fatal(err)
				}
				if hash != wakuwire.Hash(shard32, m) {
					t.Fatal("Publish returned a hash other than wakuwire.Hash")
				}
				for i := range peers {
					if i == from {
						continue
					}
					r := receive(t, subs[i], 5*time.Second)
					if r.Hash != hash || string(r.Message.Payload) != string(m.Payload) || r.PubsubTopic != shard32 {
						t.Fatalf("peer %d got %+v, want hash %x", i, r, hash)
					}
					if r.From == "" || r.From == peers[i].ID() {
						t.Fatalf("peer %d: From = %q", i, r.From)
					}
				}
			}
			if got := testutil.ToFloat64(peers[0].metrics.Relay.Published.WithLabelValues(shard32)); got != 1 {
				t.Errorf("published metric = %v, want 1", got)
			}
			if got := testutil.ToFloat64(peers[0].metrics.Relay.Received.WithLabelValues(shard32)); got != 1 {
				t.Errorf("received metric = %v, want 1", got)
			}
			if got := testutil.ToFloat64(peers[0].metrics.Relay.MeshPeers.WithLabelValues(shard32)); got != 1 {
				t.Errorf("mesh metric = %v, want 1", got)
			}
			if got := testutil.ToFloat64(peers[0].metrics.PeersConnected); got != 1 {
				t.Errorf("peers metric = %v, want 1", got)
			}
		})
	}
}

func TestMetadata(t *testing.T) {
	t.Parallel()
	t.Run("same cluster answers and stays", func(t *testing.T) {
		t.Parallel()
		a := startPeer(t, Config{Shards: []uint16{32, 64}})
		b := startPeer(t, Config{StaticPeers: []string{tcpAddr(t, a)}})
		testenv.Eventually(t, 5*time.Second, func() bool { return b.Ready(shard32) == nil }, "connection")
		cluster, shards, err := b.RequestMetadata(t.Context(), a.ID())
		if err != nil {
			t.Fatal(err)
		}
		if cluster == nil || *cluster != 16 || fmt.Sprint(shards) != "[32 64]" {
			t.Fatalf("metadata = %v %v", cluster, shards)
		}
		time.Sleep(300 * time.Millisecond)
		if a.Host().Network().Connectedness(b.ID()) != network.Connected {
			t.Fatal("same-cluster peer was disconnected")
		}
	})
	t.Run("other cluster is disconnected", func(t *testing.T) {
		t.Parallel()
		a := startPeer(t, Config{})
		b := startPeer(t, Config{ClusterID: 15})
		connected := make(chan struct{}, 1)
		b.Host().Network().Notify(&network.NotifyBundle{ConnectedF: func(network.Network, network.Conn) {
			select {
			case connected <- struct{}{}:
			default:
			}
		}})
		if err := b.Host().Connect(t.Context(), peer.AddrInfo{ID: a.ID(), Addrs: a.Host().Addrs()}); err != nil {
			t.Fatal(err)
		}
		<-connected
		testenv.Eventually(t, 5*time.Second, func() bool {
			return a.Host().Network().Connectedness(b.ID()) != network.Connected &&
				b.Host().Network().Connectedness(a.ID()) != network.Connected
		}, "disconnect after metadata")

	})
}

func TestKeyFileKeepsPeerID(t *testing.T) {
	t.Parallel()
	keyFile := filepath.Join(t.TempDir(), "sub", "nodekey")
	a, err := New(t.Context(), Config{KeyFile: keyFile, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	id := a.ID()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
	}
	b := startPeer(t, Config{KeyFile: keyFile})
	if b.ID() != id {
		t.Fatalf("peer id changed across restart: %s then %s", id, b.ID())
	}
	if err := os.WriteFile(keyFile, []byte("not hex"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(keyFile); err == nil {
		t.Fatal("corrupt key file accepted")
	}
}

func TestStaticPeerComesUpLater(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "late.key")
	key, err := LoadOrCreateKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	addr := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)

	a := startPeer(t, Config{StaticPeers: []string{addr + "/p2p/" + id.String()}})
	time.Sleep(700 * time.Millisecond) // a few failed dials: back-off grows
	if a.Ready(shard32) == nil {
		t.Fatal("ready with no peer up")
	}
	b := startPeer(t, Config{KeyFile: keyFile, ListenAddrs: []string{addr}})
	testenv.Eventually(t, 5*time.Second, func() bool {
		return a.Ready(shard32) == nil && b.Ready(shard32) == nil
	}, "late static peer connected and relaying")

	// Drop the connection: a re-dials by itself.
	if err := b.Host().Network().ClosePeer(a.ID()); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		return a.Host().Network().Connectedness(b.ID()) == network.Connected && a.Ready(shard32) == nil
	}, "re-dial after disconnect")

}

func TestTopicIsolation(t *testing.T) {
	t.Parallel()
	recv := startPeer(t, Config{Shards: []uint16{32}})
	send := startPeer(t, Config{Shards: []uint16{32, 64}, StaticPeers: []string{tcpAddr(t, recv)}})
	testenv.Eventually(t, 5*time.Second, func() bool { return send.Ready(shard32) == nil && recv.Ready(shard32) == nil }, "relay peers")
	if err := send.Ready(shard64); err == nil {
		t.Fatal("sender ready on 64 although nobody else relays it")
	}
	if _, _, err := recv.Subscribe(shard64); !errors.Is(err, ErrTopicNotJoined) {
		t.Fatalf("Subscribe(unjoined) err = %v", err)
	}
	if _, err := recv.Publish(t.Context(), shard64, testMessage("x")); !errors.Is(err, ErrTopicNotJoined) {
		t.Fatalf("Publish(unjoined) err = %v", err)
	}
	ch, cancel, err := recv.Subscribe(shard32)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	if _, err := send.Publish(t.Context(), shard64, testMessage("on 64")); err != nil {
		t.Fatal(err)
	}
	h32, err := send.Publish(t.Context(), shard32, testMessage("on 32"))
	if err != nil {
		t.Fatal(err)
	}
	if r := receive(t, ch, 5*time.Second); r.Hash != h32 {
		t.Fatalf("got %q first, want the shard-32 message", r.Message.Payload)
	}
	select {
	case r := <-ch:
		t.Fatalf("unexpected message %q", r.Message.Payload)
	case <-time.After(300 * time.Millisecond):
	}
}

// bareRelay connects a bare gossipsub node (same relay parameters, no
// validator, no metadata protocol) to p and returns its joined shard32
// topic, once p and the node see each other on it.
func bareRelay(t *testing.T, p *Node) (*pubsub.Topic, host.Host) {
	t.Helper()
	h := testenv.Libp2pHost(t, true)
	ctx, cancelPS := context.WithCancel(t.Context())
	t.Cleanup(cancelPS)
	ps, err := relay.NewGossipSub(ctx, h, []string{shard32})
	if err != nil {
		t.Fatal(err)
	}
	topic, err := ps.Join(shard32)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { topic.Close() })
	sub, err := topic.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Cancel)
	if err := h.Connect(t.Context(), peer.AddrInfo{ID: p.ID(), Addrs: p.Host().Addrs()}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() bool { return p.Ready(shard32) == nil && len(topic.ListPeers()) == 1 }, "bare node in topic")
	return topic, h
}

// TestValidatorRejectsGarbage publishes from a bare gossipsub node (same
// relay parameters, no validator, no metadata protocol): garbage is not
// delivered, a valid message after it is, and the peer that does not answer
// metadata stays connected.
func TestValidatorRejectsGarbage(t *testing.T) {
	t.Parallel()
	p := startPeer(t, Config{Registerer: prometheus.NewRegistry()})
	topic, h := bareRelay(t, p)
	ch, cancel, err := p.Subscribe(shard32)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	for _, garbage := range [][]byte{{0xff, 0xff}, {0x0a, 0x05, 'x'}, {0x12, 0x01, 0xff}} {
		if err := topic.Publish(t.Context(), garbage); err != nil {
			t.Fatal(err)
		}
	}
	good := testMessage("valid")
	if err := topic.Publish(t.Context(), good.Marshal()); err != nil {
		t.Fatal(err)
	}
	if r := receive(t, ch, 5*time.Second); r.Hash != wakuwire.Hash(shard32, good) {
		t.Fatalf("first delivered message is %x, want the valid one", r.Message.Payload)
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		return testutil.ToFloat64(p.metrics.Relay.Rejected.WithLabelValues(shard32, relay.RejectNotWakuMessage)) == 3
	}, "three rejections counted")

	// Peer scoring (go-waku's p4): three invalid messages cost 3² × -100.
	testenv.Eventually(t, 5*time.Second, func() bool { return p.Score(h.ID()) < -100 }, "the sender's score below zero")
	if p.Host().Network().Connectedness(h.ID()) != network.Connected {
		t.Fatal("peer without metadata protocol was disconnected")
	}
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{}, true},
		{"bad listen", Config{ListenAddrs: []string{"tcp://x"}}, false},
		{"static without p2p", Config{StaticPeers: []string{"/ip4/1.2.3.4/tcp/60000"}}, false},
		{"shard out of range", Config{Shards: []uint16{1024}}, false},
		{"duplicate shard", Config{Shards: []uint16{32, 32}}, false},
		{"back-off inverted", Config{ReconnectMin: time.Minute, ReconnectMax: time.Second}, false},
		{"bad announce", Config{AnnounceAddrs: []string{"example.org:60000"}}, false},
		{"max peers leaves no room", Config{MaxPeers: 1, StaticPeers: []string{"/dns4/boot.example.org/tcp/30303/p2p/16Uiu2HAmGMKQTgpM9cRgLJP8hFCS2v47iK9V9mvum7LKA5wvX13i"}}, false},
		{"static peer ok", Config{StaticPeers: []string{"/dns4/boot.example.org/tcp/30303/p2p/16Uiu2HAmGMKQTgpM9cRgLJP8hFCS2v47iK9V9mvum7LKA5wvX13i"}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.cfg.withDefaults().validate()
			if (err == nil) != tc.ok {
				t.Fatalf("validate = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	announced := "/dns4/waku.example.org/tcp/60000"
	if got := fmt.Sprint(startPeer(t, Config{AnnounceAddrs: []string{announced}}).Host().Addrs()); got != "["+announced+"]" {
		t.Errorf("announced addrs %s, want [%s]", got, announced)
	}
	d := Config{}.withDefaults()
	if d.ClusterID != 16 || fmt.Sprint(d.Shards) != "[32]" || len(d.ListenAddrs) != 2 || d.ReconnectMin != time.Second || d.ReconnectMax != time.Minute {
		t.Fatalf("defaults = %+v", d)
	}
}

func TestCloseEndsSubscriptions(t *testing.T) {
	t.Parallel()
	p, err := New(t.Context(), Config{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ch, cancel, err := p.Subscribe(shard32)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("message after Close")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("subscription not closed by Close")
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := p.Publish(t.Context(), shard32, testMessage("late")); err == nil {
		t.Fatal("Publish after Close succeeded")
	}
	if _, err := p.Publish(t.Context(), shard32, &wakuwire.Message{ContentTopic: "/a/1/b/proto"}); err == nil {
		t.Fatal("Publish of a message without payload succeeded")
	}
}

// A failed New (port taken) leaves the registry clean for the next attempt.
func TestNewFailureReleasesMetrics(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	reg := prometheus.NewRegistry()
	taken := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", l.Addr().(*net.TCPAddr).Port)
	if _, err := New(t.Context(), Config{ListenAddrs: []string{taken}, Registerer: reg, Logger: quietLogger()}); err == nil {
		t.Fatal("New listening on a taken port succeeded")
	}
	startPeer(t, Config{Registerer: reg})
}
