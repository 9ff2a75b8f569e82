package node

// Interop with js-waku, a Waku relay nobody here wrote: interop/js-relay/relay.mjs
// runs a @waku/sdk relay node (a pinned, older js-waku set: package-lock.json
// committed; scripts/test installs it with npm ci) as a child process.

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/testenv"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

const jsContentTopic = "/archivefleet/1/relay-interop/proto"

func TestJSRelayInterop(t *testing.T) {
	t.Parallel()
	js := testenv.StartJSRelay(t)
	// Our peer dials js-waku as a static peer and asks it for its metadata
	// (checkMetadata); js-waku does not ask on its own (see relay.mjs).
	p := startPeer(t, Config{StaticPeers: js.Ready.Addrs, Shards: []uint16{32, 64}})
	jsID, err := peer.Decode(js.Ready.PeerID)
	if err != nil {
		t.Fatal(err)
	}
	// js-waku's own metadata client asks us, soon after connecting: its
	// stream pool opened the request stream at identify, and our handler
	// gives up on a silent stream after MetadataTimeout.
	testenv.Eventually(t, 15*time.Second, func() bool {
		return js.Call(map[string]any{"op": "connected", "peerId": p.ID().String()}).Connections > 0
	}, "js-waku connected to us")

	md := js.Call(map[string]any{"op": "metadata", "peerId": p.ID().String()})
	if md.ClusterID == nil || *md.ClusterID != 16 || !slices.Equal(md.Shards, []uint32{32, 64}) {
		t.Fatalf("js-waku's metadata query of our peer: cluster %v shards %v, want 16 [32 64]", ptrString(md.ClusterID), md.Shards)
	}
	testenv.Eventually(t, 15*time.Second, func() bool {
		if p.Ready(shard32) != nil || p.MeshPeers(shard32) != 1 {
			return false
		}
		l := js.Call(map[string]any{"op": "peers"})
		return l.Mesh == 1
	}, "js-waku in our relay mesh and we in its")

	cluster, shards, err := p.RequestMetadata(t.Context(), jsID)
	if err != nil {
		t.Fatalf("js-waku metadata: %v", err)
	}
	if cluster == nil || *cluster != 16 || !slices.Contains(shards, 32) {
		t.Fatalf("js-waku metadata: cluster %v shards %v", cluster, shards)
	}

	ch, cancel, err := p.Subscribe(shard32)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()

	// Go -> js. Version 0: js-waku's plain decoder takes only version 0.
	m := &wakuwire.Message{Payload: []byte("from go"), ContentTopic: jsContentTopic, Timestamp: time.Now().UnixNano()}
	hash, err := p.Publish(t.Context(), shard32, m)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-js.Events:
		if l.PayloadHex != hex.EncodeToString(m.Payload) || l.PubsubTopic != shard32 {
			t.Fatalf("js-waku received %+v", l)
		}
		if l.HashHex != hex.EncodeToString(hash[:]) {
			t.Fatalf("js-waku hash %s, ours %x", l.HashHex, hash)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("js-waku did not receive our message")
	}

	// js -> Go.
	payload := []byte("from js-waku")
	sent := js.Call(map[string]any{"op": "send", "payloadHex": hex.EncodeToString(payload), "timestampMs": time.Now().UnixMilli()})
	if sent.Recipients < 1 {
		t.Fatalf("js-waku sent to %d peers", sent.Recipients)
	}
	r := receive(t, ch, 10*time.Second)
	if string(r.Message.Payload) != string(payload) || r.Message.ContentTopic != jsContentTopic || r.From != jsID {
		t.Fatalf("received %+v", r)
	}
	if got := hex.EncodeToString(r.Hash[:]); got != sent.HashHex {
		t.Fatalf("hash of js-waku's message: ours %s, js-waku %s", got, sent.HashHex)
	}
	if p.Host().Network().Connectedness(jsID) != network.Connected {
		t.Fatal("js-waku peer was disconnected")
	}
}

// TestJSRelayOtherCluster: js-waku on cluster 99 is disconnected by our
// peer's metadata check, whichever side dials, and never stays connected.
// js-waku itself drops nobody for being on another cluster (see relay.mjs),
// and its libp2p re-dials us as soon as we hang up (its only peer), so the
// connections come and go; none may last, and our peer must log dropping
// it for its cluster (dropPeer's warning, metadata.go). On cluster 16 the same node meshes with us
// (TestJSRelayInterop). On 99 it relays /waku/2/rs/99/32, which we do not,
// so it is never a topic or mesh peer of ours either way; those checks are
// cheap, the connection ages and the drop log are what fail without the
// cluster check.
func TestJSRelayOtherCluster(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		weDial bool
	}{
		{"we dial it as a static peer", true},
		{"it dials us", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			js := testenv.StartJSRelay(t, "WAKU_CLUSTER_ID=99")
			jsID, err := peer.Decode(js.Ready.PeerID)
			if err != nil {
				t.Fatal(err)
			}
			drops := &dropLog{Handler: quietLogger().Handler(), mu: &sync.Mutex{}, reasons: map[string][]string{}}
			cfg := Config{Logger: slog.New(drops)}
			if tc.weDial {
				cfg.StaticPeers = js.Ready.Addrs
			}
			p := startPeer(t, cfg)
			if !tc.weDial {
				js.Call(map[string]any{"op": "dial", "addr": tcpAddr(t, p)})
			}
			testenv.Eventually(t, 10*time.Second, func() bool {
				return len(drops.of(jsID)) > 0
			}, "our peer to drop js-waku (cluster 99)")

			if r := drops.of(jsID)[0]; !strings.Contains(r, "cluster 99") {
				t.Fatalf("dropped js-waku for %q, want its cluster 99", r)
			}

			// A dropped peer is gone within milliseconds; 2 s leaves room
			// for a loaded machine but not for a kept connection.
			const lasting = 2 * time.Second
			for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(25 * time.Millisecond) {
				for _, c := range p.Host().Network().ConnsToPeer(jsID) {
					if age := time.Since(c.Stat().Opened); age > lasting {
						t.Fatalf("a connection to js-waku (cluster 99, %s) is %v old", c.Stat().Direction, age.Round(time.Millisecond))
					}
				}
				if n, m := p.TopicPeers(shard32), p.MeshPeers(shard32); n != 0 || m != 0 {
					t.Fatalf("js-waku (cluster 99) is a topic peer (%d) or mesh peer (%d) of ours", n, m)
				}
			}
			l := js.Call(map[string]any{"op": "connected", "peerId": p.ID().String()})
			if l.OldestMs > lasting.Milliseconds() {
				t.Fatalf("js-waku has %d connections to us, the oldest %d ms old", l.Connections, l.OldestMs)
			}
			if l := js.Call(map[string]any{"op": "peers"}); l.Mesh != 0 {
				t.Fatalf("js-waku (cluster 99) has %d mesh peers", l.Mesh)
			}
			// js-waku redials at once; the ban refuses it (gater.go), so it
			// is connected and dropped once, not in a loop.
			if n := len(drops.of(jsID)); n != 1 {
				t.Fatalf("js-waku dropped %d times, want once (then refused)", n)
			}
		})
	}
}

// dropLog is a slog.Handler that passes records on to Handler and keeps,
// by the record's "peer" attribute, the "reason" of each warning that a
// peer is being disconnected (metadata.go dropPeer).
type dropLog struct {
	slog.Handler
	mu      *sync.Mutex
	reasons map[string][]string
}

func (d *dropLog) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || d.Handler.Enabled(ctx, l)
}

func (d *dropLog) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn && strings.Contains(r.Message, "disconnect") {
		var id, reason string
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "peer":
				id = a.Value.String()
			case "reason":
				reason = a.Value.String()
			}
			return true
		})
		d.mu.Lock()
		d.reasons[id] = append(d.reasons[id], reason)
		d.mu.Unlock()
	}
	if !d.Handler.Enabled(ctx, r.Level) {
		return nil
	}
	return d.Handler.Handle(ctx, r)
}

func (d *dropLog) WithAttrs(as []slog.Attr) slog.Handler {
	return &dropLog{Handler: d.Handler.WithAttrs(as), mu: d.mu, reasons: d.reasons}
}

func (d *dropLog) WithGroup(name string) slog.Handler {
	return &dropLog{Handler: d.Handler.WithGroup(name), mu: d.mu, reasons: d.reasons}
}

// of returns the reasons id was dropped for, oldest first.
func (d *dropLog) of(id peer.ID) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.reasons[id.String()])
}

func ptrString(p *uint32) string {
	if p == nil {
		return "none"
	}
	return fmt.Sprint(*p)
}
