package wakupeer

// Interop with js-waku, a Waku relay nobody here wrote: interop/js-relay/relay.mjs
// runs a @waku/sdk relay node (pinned set from spec waku-edge.md §4, package-lock.json
// committed; scripts/test installs it with npm ci) as a child process.

import (
	"encoding/hex"
	"slices"
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
	// Our peer dials js-waku as a static peer; both then run metadata.
	p := startPeer(t, Config{StaticPeers: js.Ready.Addrs})
	jsID, err := peer.Decode(js.Ready.PeerID)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "js-waku in our relay mesh and we in its", func() bool {
		if p.Ready(shard32) != nil || p.MeshPeers(shard32) != 1 {
			return false
		}
		l := js.Call(map[string]any{"op": "peers"})
		return l.Mesh == 1
	})
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
