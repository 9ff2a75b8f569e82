package wakupeer

// Interop with js-waku, a Waku relay nobody here wrote: interop/js-relay/relay.mjs
// runs a @waku/sdk relay node (pinned set from spec waku-edge.md §4, package-lock.json
// committed; scripts/test installs it with npm ci) as a child process.

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/wakuwire"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

const jsContentTopic = "/archivefleet/1/relay-interop/proto"

type jsLine struct {
	Event       string   `json:"event"`
	Error       string   `json:"error"`
	PeerID      string   `json:"peerId"`
	Addrs       []string `json:"addrs"`
	PubsubTopic string   `json:"pubsubTopic"`
	PayloadHex  string   `json:"payloadHex"`
	HashHex     string   `json:"hashHex"`
	Mesh        int      `json:"mesh"`
	TopicPeers  int      `json:"topicPeers"`
	Recipients  int      `json:"recipients"`
}

type jsRelay struct {
	t       *testing.T
	in      io.WriteCloser
	replies chan jsLine
	events  chan jsLine
	ready   jsLine
	stderr  *bytes.Buffer
}

func startJSRelay(t *testing.T) *jsRelay {
	t.Helper()
	if testing.Short() {
		t.Skip("js-waku relay interop: skipped with -short")
	}
	dir, err := filepath.Abs(filepath.Join("..", "..", "interop", "js-relay"))
	if err != nil {
		t.Fatal(err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("js-waku relay interop: `node` is not on PATH (need Node 20+ with npm); scripts/test then installs %s/node_modules with npm ci", dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@waku", "sdk", "package.json")); err != nil {
		t.Fatalf("js-waku relay interop: %s/node_modules is missing (%v). Run scripts/test, which runs `npm ci --prefix interop/js-relay`", dir, err)
	}
	cmd := exec.Command(node, "--import", "./polyfill.mjs", "relay.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NODE_ENV=test")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	j := &jsRelay{t: t, in: in, replies: make(chan jsLine, 16), events: make(chan jsLine, 64), stderr: &bytes.Buffer{}}
	cmd.Stderr = j.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var l jsLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				continue // console noise
			}
			if l.Event != "" {
				j.events <- l
			} else {
				j.replies <- l
			}
		}
	}()
	t.Cleanup(func() {
		in.Close() // relay.mjs stops its node and exits on stdin EOF
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
		if l.Event != "ready" {
			t.Fatalf("relay.mjs: first line %+v, want ready", l)
		}
		j.ready = l
	case <-time.After(20 * time.Second):
		t.Fatalf("relay.mjs did not start within 20 s; stderr:\n%s", j.stderr)
	}
	return j
}

func (j *jsRelay) call(req map[string]any) jsLine {
	j.t.Helper()
	b, _ := json.Marshal(req)
	if _, err := j.in.Write(append(b, '\n')); err != nil {
		j.t.Fatal(err)
	}
	select {
	case l := <-j.replies:
		if l.Error != "" {
			j.t.Fatalf("relay.mjs %v: %s", req["op"], l.Error)
		}
		return l
	case <-time.After(10 * time.Second):
		j.t.Fatalf("relay.mjs %v: no reply; stderr:\n%s", req["op"], j.stderr)
	}
	return jsLine{}
}

func TestJSRelayInterop(t *testing.T) {
	t.Parallel()
	js := startJSRelay(t)
	if len(js.ready.Addrs) == 0 {
		t.Fatal("relay.mjs reported no listen address")
	}
	// Our peer dials js-waku as a static peer; both then run metadata.
	p := startPeer(t, Config{StaticPeers: js.ready.Addrs})
	jsID, err := peer.Decode(js.ready.PeerID)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "js-waku in our relay mesh and we in its", func() bool {
		if p.Ready(shard32) != nil || p.MeshPeers(shard32) != 1 {
			return false
		}
		l := js.call(map[string]any{"op": "peers"})
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
	case l := <-js.events:
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
	sent := js.call(map[string]any{"op": "send", "payloadHex": hex.EncodeToString(payload), "timestampMs": time.Now().UnixMilli()})
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
