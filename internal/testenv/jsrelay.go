package testenv

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// NodeInterop returns the `node` binary and the absolute path of
// interop/<sub> in the module (found from the package directory `go test`
// runs in), for interop tests against js-waku. It skips with -short;
// a missing node or a missing npm package pkg under node_modules is a test
// failure (scripts/test installs them with npm ci), never a skip. what names
// the test in its messages.
func NodeInterop(t testing.TB, what, sub, pkg string) (node, dir string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("%s: skipped with -short", what)
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(root, "interop", sub)
	node, err = exec.LookPath("node")
	if err != nil {
		t.Fatalf("%s: `node` is not on PATH (need Node 20+ with npm). Install Node, then run scripts/test, which installs %s/node_modules with npm ci", what, dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", filepath.FromSlash(pkg), "package.json")); err != nil {
		t.Fatalf("%s: %s/node_modules is missing or incomplete (%v). Run scripts/test, which runs `npm ci --prefix interop/%s`", what, dir, err, sub)
	}
	return node, dir
}

// moduleRoot is the nearest directory up from the working directory that
// holds go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("testenv: no go.mod above the working directory")
		}
		dir = parent
	}
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

// NodeScript is a running script of interop/js-relay that speaks JSON
// lines: its first line is {"event":"ready",...}, later lines with an
// "event" key are events, and each request written to its stdin gets one
// reply line, in order.
type NodeScript struct {
	// Ready is the first line.
	Ready json.RawMessage
	// Events carries the event lines after Ready, in order. A test that
	// does not read them loses the oldest past 4096, never stalls replies.
	Events <-chan json.RawMessage

	t       testing.TB
	name    string
	in      io.WriteCloser
	replies chan json.RawMessage
	stderr  *Buffer
}

// StartNodeScript runs `node --import ./polyfill.mjs <script>` in
// interop/js-relay with NODE_ENV=test and env ("KEY=value") added to the
// environment, and waits up to readyWithin for its ready line. It skips
// with -short and fails if node or node_modules is missing (see
// NodeInterop). The script stops with the test (it must exit on stdin EOF;
// it is killed after 5 s); its stderr is logged if the test failed.
func StartNodeScript(t testing.TB, script string, readyWithin time.Duration, env ...string) *NodeScript {
	t.Helper()
	node, dir := NodeInterop(t, "js-waku interop ("+script+")", "js-relay", "@waku/sdk")
	cmd := exec.Command(node, "--import", "./polyfill.mjs", script)
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
	events := make(chan json.RawMessage, 4096)
	n := &NodeScript{Events: events, t: t, name: script, in: in, replies: make(chan json.RawMessage, 16), stderr: &Buffer{}}
	cmd.Stderr = n.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting node %s: %v", script, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(events)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 64<<20)
		for sc.Scan() {
			var head struct {
				Event string `json:"event"`
			}
			if json.Unmarshal(sc.Bytes(), &head) != nil {
				continue // console noise
			}
			line := json.RawMessage(append([]byte(nil), sc.Bytes()...))
			if head.Event == "" {
				n.replies <- line
				continue
			}
			for {
				select {
				case events <- line:
				default:
					<-events // full: drop the oldest
					continue
				}
				break
			}
		}
	}()
	t.Cleanup(func() {
		in.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s stderr:\n%s", script, n.stderr)
		}
	})
	select {
	case l := <-events:
		n.Ready = l
	case <-time.After(readyWithin):
		t.Fatalf("%s did not start within %v; stderr:\n%s", script, readyWithin, n.stderr)
	}
	return n
}

// Call sends req and decodes its reply into out, failing the test on a
// reply with an "error" or none within timeout.
func (n *NodeScript) Call(req map[string]any, out any, timeout time.Duration) {
	n.t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		n.t.Fatal(err)
	}
	if _, err := n.in.Write(append(b, '\n')); err != nil {
		n.t.Fatal(err)
	}
	select {
	case l := <-n.replies:
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(l, &e) == nil && e.Error != "" {
			n.t.Fatalf("%s %v: %s", n.name, req["op"], e.Error)
		}
		if err := json.Unmarshal(l, out); err != nil {
			n.t.Fatalf("%s %v: reply %s: %v", n.name, req["op"], l, err)
		}
	case <-time.After(timeout):
		n.t.Fatalf("%s %v: no reply within %v; stderr:\n%s", n.name, req["op"], timeout, n.stderr)
	}
}

// JSRelay is a running relay.mjs: a js-waku relay node, an independent peer.
type JSRelay struct {
	// Ready is its first line: the "ready" event with its peer id and
	// listen addresses (at least one).
	Ready JSRelayLine
	// Events carries the event lines after Ready, in order, stamped with
	// the time they were read.
	Events <-chan JSRelayLine

	n *NodeScript
}

// StartJSRelay runs relay.mjs (StartNodeScript) with env (e.g.
// WAKU_SYM_CHATS or WAKU_CLUSTER_ID; see relay.mjs) and waits for its ready
// line.
func StartJSRelay(t testing.TB, env ...string) *JSRelay {
	t.Helper()
	n := StartNodeScript(t, "relay.mjs", 30*time.Second, env...)
	j := &JSRelay{n: n}
	if err := json.Unmarshal(n.Ready, &j.Ready); err != nil || j.Ready.Event != "ready" || len(j.Ready.Addrs) == 0 {
		t.Fatalf("relay.mjs: first line %s, want ready with listen addresses", n.Ready)
	}
	events := make(chan JSRelayLine, 4096)
	j.Events = events
	go func() {
		for raw := range n.Events {
			var l JSRelayLine
			if json.Unmarshal(raw, &l) == nil {
				l.At = time.Now()
				events <- l
			}
		}
	}()
	return j
}

// Call sends req (e.g. {"op":"peers"}) and returns its reply, failing the
// test on an error reply or none within 10 s.
func (j *JSRelay) Call(req map[string]any) JSRelayLine {
	j.n.t.Helper()
	var l JSRelayLine
	j.n.Call(req, &l, 10*time.Second)
	l.At = time.Now()
	return l
}
