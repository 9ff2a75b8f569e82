package testenv

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// NodeInterop returns the `node` binary and the absolute path of
// interop/<sub> (relative to a package directory under internal/, where
// `go test` runs), for interop tests against js-waku. It skips with -short;
// a missing node or a missing npm package pkg under node_modules is a test
// failure (scripts/test installs them with npm ci), never a skip. what names
// the test in its messages.
func NodeInterop(t testing.TB, what, sub, pkg string) (node, dir string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("%s: skipped with -short", what)
	}
	dir, err := filepath.Abs(filepath.Join("..", "..", "interop", sub))
	if err != nil {
		t.Fatal(err)
	}
	node, err = exec.LookPath("node")
	if err != nil {
		t.Fatalf("%s: `node` is not on PATH (need Node 20+ with npm). Install Node, then run scripts/test, which installs %s/node_modules with npm ci", what, dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", filepath.FromSlash(pkg), "package.json")); err != nil {
		t.Fatalf("%s: %s/node_modules is missing or incomplete (%v). Run scripts/test, which runs `npm ci --prefix interop/%s`", what, dir, err, sub)
	}
	return node, dir
}

// JSRelayLine is a line of interop/js-relay/relay.mjs (see its header): an
// event (Event set) or a reply to a request.
type JSRelayLine struct {
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
	Mesh            int      `json:"mesh"`
	TopicPeers      int      `json:"topicPeers"`
	Recipients      int      `json:"recipients"`
	// sendChat's archive record as js-waku computes it.
	TimestampNs string `json:"timestampNs"`
	TopicHex    string `json:"topicHex"`
	DataHex     string `json:"dataHex"`
	PaddingHex  string `json:"paddingHex"`
	// Connections answers "peers" (all) and "connected" (to one peer);
	// OldestMs is, for "connected", the age of the oldest of them.
	Connections int   `json:"connections"`
	OldestMs    int64 `json:"oldestMs"`
	// ClusterID and Shards answer op "metadata": what the queried peer told
	// js-waku's metadata client (ClusterID nil: the peer sent none).
	ClusterID *uint32  `json:"clusterId"`
	Shards    []uint32 `json:"shards"`
	// At is when the line was read.
	At time.Time `json:"-"`
}

// JSRelay is a running relay.mjs: a js-waku relay node, an independent peer.
type JSRelay struct {
	// Ready is its first line: the "ready" event with its peer id and
	// listen addresses (at least one).
	Ready JSRelayLine
	// Events carries the event lines after Ready, in order.
	Events <-chan JSRelayLine

	t       testing.TB
	in      io.WriteCloser
	replies chan JSRelayLine
	stderr  *Buffer
}

// StartJSRelay runs `node --import ./polyfill.mjs relay.mjs` in
// interop/js-relay with NODE_ENV=test and env ("KEY=value", e.g.
// WAKU_SYM_CHATS or WAKU_CLUSTER_ID; see relay.mjs) added to the
// environment, and waits for its ready line. It
// skips with -short and fails if node or node_modules is missing (see
// NodeInterop). The node stops with the test (relay.mjs exits on stdin EOF;
// killed after 5 s); its stderr is logged if the test failed.
func StartJSRelay(t testing.TB, env ...string) *JSRelay {
	t.Helper()
	node, dir := NodeInterop(t, "js-waku relay interop", "js-relay", "@waku/sdk")
	cmd := exec.Command(node, "--import", "./polyfill.mjs", "relay.mjs")
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "NODE_ENV=test"), env...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan JSRelayLine, 64)
	j := &JSRelay{Events: events, t: t, in: in, replies: make(chan JSRelayLine, 16), stderr: &Buffer{}}
	cmd.Stderr = j.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("js-waku relay interop: starting node relay.mjs: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var l JSRelayLine
			if json.Unmarshal(sc.Bytes(), &l) != nil {
				continue // console noise
			}
			l.At = time.Now()
			if l.Event != "" {
				events <- l
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
	case l := <-events:
		if l.Event != "ready" || len(l.Addrs) == 0 {
			t.Fatalf("relay.mjs: first line %+v, want ready with listen addresses", l)
		}
		j.Ready = l
	case <-time.After(30 * time.Second):
		t.Fatalf("relay.mjs did not start within 30 s; stderr:\n%s", j.stderr)
	}
	return j
}

// Call sends req (e.g. {"op":"peers"}) and returns its reply, failing the
// test on an error reply or none within 10 s.
func (j *JSRelay) Call(req map[string]any) JSRelayLine {
	j.t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		j.t.Fatal(err)
	}
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
	return JSRelayLine{}
}
