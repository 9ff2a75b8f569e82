package hostiletest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/messages"
	"github.com/archivefleet/archivefleet/internal/registry"
)

// Stated bounds (RELIABILITY.md, "Hostile input"): how much the
// all-in-one's peak resident memory may grow over its resting size for one
// request of each kind. The ingest budget (messages.DefaultIngestMemory,
// 128 MiB) bounds what requests hold; the rest is the Go heap's slack and
// the embedded NATS server's caches.
const (
	boundEmpty      = 64 << 20  // any body of empty messages
	boundTiny       = 192 << 20 // 64 MiB of small valid messages, stored
	boundOneMax     = 256 << 20 // one message at the 30 MB cap
	boundConcurrent = 384 << 20 // 12 maximal bodies at once
	boundReply      = 256 << 10 // any reply
)

// hostileFleet is a fleet with one registered community for ingest tests.
type hostileFleet struct {
	*fleetProc
	b   *bus.Bus
	com *registry.Community
	sig []byte
}

func newHostileFleet(t *testing.T, env ...string) *hostileFleet {
	f := startFleet(t, env...)
	b := f.Bus(t)
	key := fixture.Key()
	// One open window: a week from a day ago, so nothing sent now is late.
	com := fixture.CommunityFromKey(key, 7*24*time.Hour, uint64(time.Now().Add(-24*time.Hour).Unix()), archive.Topic{0xab, 1, 2, 3})
	if err := registry.New(b.Communities).Put(context.Background(), com); err != nil {
		t.Fatal(err)
	}
	return &hostileFleet{fleetProc: f, b: b, com: com, sig: fixture.Signers(1)[0]}
}

func (h *hostileFleet) url() string {
	return h.URL() + "/v1/communities/" + h.com.ID.String() + "/messages"
}

// post sends body (of length n, -1 for chunked) and returns the status,
// headers and reply.
func (h *hostileFleet) post(t *testing.T, body io.Reader, n int64, hdr map[string]string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.url(), body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = n
	req.Header.Set("Content-Type", "application/x-ndjson")
	// As curl does for large bodies: the body goes only once the server
	// asks for it, so a request refused before its body is read (busy,
	// too large) gets its answer instead of a closed connection.
	req.Header.Set("Expect", "100-continue")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, reply
}

// client waits for the server's "100 Continue" as long as the ingest
// budget's wait may take.
var client = &http.Client{Transport: &http.Transport{ExpectContinueTimeout: time.Minute}}

// repeat is a reader of unit repeated until n bytes.
type repeat struct {
	unit []byte
	n, i int64
}

func (r *repeat) Read(p []byte) (int, error) {
	if r.i >= r.n {
		return 0, io.EOF
	}
	k := 0
	for k < len(p) && r.i < r.n {
		c := copy(p[k:min(len(p), k+int(r.n-r.i))], r.unit[r.i%int64(len(r.unit)):])
		k += c
		r.i += int64(c)
	}
	return k, nil
}

// tinyMessages writes valid small messages as JSON lines up to n bytes.
type tinyMessages struct {
	h    *hostileFleet
	n, i int64
	seq  uint64
	buf  []byte
}

func (r *tinyMessages) Read(p []byte) (int, error) {
	if r.i >= r.n {
		return 0, io.EOF
	}
	if len(r.buf) == 0 {
		r.seq++
		m := archive.Message{Sig: r.h.sig, Timestamp: uint64(time.Now().Unix()) - 3600, Topic: r.h.com.Topics[0],
			Payload: []byte(fmt.Sprintf("tiny message %d", r.seq)), Hash: fixture.Hash([]byte(fmt.Sprintf("tiny %d %p", r.seq, r)))}
		j, _ := json.Marshal(m)
		r.buf = append(j, '\n')
		if int64(len(r.buf)) > r.n-r.i {
			r.buf = r.buf[:0]
			r.i = r.n
			return 0, io.EOF
		}
	}
	k := copy(p, r.buf)
	r.buf = r.buf[k:]
	r.i += int64(k)
	return k, nil
}

func maxMessageJSON(h *hostileFleet, hashSeed string) []byte {
	m := archive.Message{Sig: h.sig, Timestamp: uint64(time.Now().Unix()) - 3600, Topic: h.com.Topics[0],
		Payload: bytes.Repeat([]byte{0x5a}, archive.MaxMessageBytes-65), Hash: fixture.Hash([]byte(hashSeed))}
	j, _ := json.Marshal(m)
	return append(j, '\n')
}

// measure runs fn after resetting the fleet's peak RSS and returns how far
// the peak rose above the resident size before.
func measure(t *testing.T, f *fleetProc, fn func()) int64 {
	t.Helper()
	f.ResetPeakRSS(t)
	before := f.RSS(t)
	fn()
	return f.PeakRSS(t) - before
}

func TestIngestMemoryIsBounded(t *testing.T) {
	h := newHostileFleet(t)
	cases := []struct {
		name  string
		body  func() (io.Reader, int64)
		bound int64
		check func(t *testing.T, code int, res messages.IngestResult)
	}{
		{"10 MB of empty messages", func() (io.Reader, int64) {
			return &repeat{unit: []byte("{}\n"), n: 9_999_999}, 9_999_999
		}, boundEmpty, func(t *testing.T, code int, res messages.IngestResult) {
			if code != 200 || res.Refused != 10_000_000/3 || len(res.Messages) != messages.MaxReportedMessages {
				t.Errorf("HTTP %d, %d refused, %d entries", code, res.Refused, len(res.Messages))
			}
		}},
		{"64 MiB of empty messages", func() (io.Reader, int64) {
			n := int64(messages.MaxBatchBytes) / 3 * 3
			return &repeat{unit: []byte("{}\n"), n: n}, n
		}, boundEmpty, func(t *testing.T, code int, res messages.IngestResult) {
			if code != 200 || res.Refused != messages.MaxBatchBytes/3 {
				t.Errorf("HTTP %d, %d refused", code, res.Refused)
			}
		}},
		{"64 MiB of tiny valid messages", func() (io.Reader, int64) {
			return &tinyMessages{h: h, n: messages.MaxBatchBytes}, -1
		}, boundTiny, func(t *testing.T, code int, res messages.IngestResult) {
			if code != 200 || res.Stored < 150_000 || res.Refused+res.Failed != 0 {
				t.Errorf("HTTP %d, %d stored, %d refused, %d failed", code, res.Stored, res.Refused, res.Failed)
			}
		}},
		{"one 30 MB message", func() (io.Reader, int64) {
			b := maxMessageJSON(h, "one max")
			return bytes.NewReader(b), int64(len(b))
		}, boundOneMax, func(t *testing.T, code int, res messages.IngestResult) {
			if code != 200 || res.Stored != 1 {
				t.Errorf("HTTP %d, %+v", code, res)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var code int
			var reply []byte
			cpu := h.CPUTime(t)
			start := time.Now()
			grew := measure(t, h.fleetProc, func() {
				body, n := c.body()
				code, _, reply = h.post(t, body, n, nil)
			})
			var res messages.IngestResult
			if err := json.Unmarshal(reply, &res); err != nil {
				t.Fatalf("HTTP %d: %v: %.300s", code, err, reply)
			}
			c.check(t, code, res)
			logMemory(t, h.fleetProc)
			report(t, "ingest %s: peak RSS +%s (bound %s), reply %d bytes, %v, CPU %v", c.name, mib(grew), mib(c.bound),
				len(reply), time.Since(start).Round(time.Millisecond), (h.CPUTime(t) - cpu).Round(time.Millisecond))
			if grew > c.bound {
				t.Errorf("peak RSS grew %s, over the %s bound", mib(grew), mib(c.bound))
			}
			if len(reply) > boundReply {
				t.Errorf("reply of %d bytes", len(reply))
			}
		})
	}
}

// TestConcurrentMaximalBodies: 12 requests each carrying a message at the
// cap at once; the budget lets them through a few at a time (or answers
// 503 with Retry-After), never all in memory together. Then 12 bodies over
// the cap: refused before they are read.
func TestConcurrentMaximalBodies(t *testing.T) {
	h := newHostileFleet(t)
	codes := map[int]int{}
	var mu sync.Mutex
	grew := measure(t, h.fleetProc, func() {
		var wg sync.WaitGroup
		for i := range 12 {
			wg.Go(func() {
				b := maxMessageJSON(h, fmt.Sprintf("concurrent %d", i))
				code, hdr, reply := h.post(t, bytes.NewReader(b), int64(len(b)), nil)
				mu.Lock()
				defer mu.Unlock()
				codes[code]++
				if code == 503 && hdr.Get("Retry-After") == "" || code != 200 && code != 503 {
					t.Errorf("HTTP %d (Retry-After %q): %.200s", code, hdr.Get("Retry-After"), reply)
				}
			})
		}
		wg.Wait()
	})
	report(t, "12 concurrent 30 MB messages: peak RSS +%s (bound %s), answers %v", mib(grew), mib(boundConcurrent), codes)
	if grew > boundConcurrent {
		t.Errorf("peak RSS grew %s, over %s", mib(grew), mib(boundConcurrent))
	}
	if codes[200] == 0 {
		t.Error("none stored")
	}
	grew = measure(t, h.fleetProc, func() {
		var wg sync.WaitGroup
		for range 12 {
			wg.Go(func() {
				n := int64(70 << 20)
				code, _, _ := h.post(t, &repeat{unit: []byte("{}\n"), n: n}, n, nil)
				if code != http.StatusRequestEntityTooLarge {
					t.Errorf("70 MiB body: HTTP %d", code)
				}
			})
		}
		wg.Wait()
	})
	report(t, "12 concurrent 70 MiB bodies: 413 each, peak RSS +%s", mib(grew))
	if grew > boundEmpty {
		t.Errorf("peak RSS grew %s for bodies refused unread", mib(grew))
	}
}

// TestSlowDripBodies: 500 clients that send their headers and then a byte
// now and then are cut off after the body grace (15 s plus the rate), not
// held open.
func TestSlowDripBodies(t *testing.T) {
	h := newHostileFleet(t)
	const n = 500
	head := "POST /v1/communities/" + h.com.ID.String() + "/messages HTTP/1.1\r\nHost: " + h.HTTP +
		"\r\nContent-Type: application/x-ndjson\r\nContent-Length: 1000000\r\n\r\n{"
	start := time.Now()
	var wg sync.WaitGroup
	closed := make(chan time.Duration, n)
	for range n {
		conn, err := net.Dial("tcp", h.HTTP)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		if _, err := conn.Write([]byte(head)); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			// Drip a byte a second until the server ends the exchange.
			go func() {
				for range time.Tick(time.Second) {
					if _, err := conn.Write([]byte(" ")); err != nil {
						return
					}
				}
			}()
			conn.SetReadDeadline(time.Now().Add(90 * time.Second))
			io.Copy(io.Discard, conn)
			closed <- time.Since(start)
		})
	}
	wg.Wait()
	close(closed)
	var last time.Duration
	for d := range closed {
		last = max(last, d)
	}
	report(t, "%d slow-drip bodies: all answered and closed within %v", n, last.Round(100*time.Millisecond))
	if last > 45*time.Second {
		t.Errorf("the last slow body was held %v", last)
	}
}

// TestNATSIngestBounded: a NATS request of 2.1 MB of empty messages gets a
// bounded reply that fits the max payload, and the request needs the token
// as HTTP does.
func TestNATSIngestBounded(t *testing.T) {
	h := newHostileFleet(t, "ARCHIVEFLEET_INGEST_TOKEN=s3cret")
	body := bytes.Repeat([]byte("{}\n"), 700_000)
	m := nats.NewMsg(bus.SubjectIngest(h.com.ID.String()))
	m.Data = body
	reply, err := h.b.NC.RequestMsg(m, 30*time.Second)
	if err != nil || !strings.Contains(string(reply.Data), "unauthorized") {
		t.Fatalf("without the token: %v %s", err, reply.Data)
	}
	m.Header.Set("Authorization", "Bearer s3cret")
	var res messages.IngestResult
	grew := measure(t, h.fleetProc, func() {
		reply, err = h.b.NC.RequestMsg(m, 60*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(reply.Data, &res); err != nil {
			t.Fatal(err)
		}
	})
	report(t, "NATS ingest of 2.1 MB of empty messages: peak RSS +%s, reply %d bytes", mib(grew), len(reply.Data))
	if res.Refused != 700_000 || len(reply.Data) > boundReply || grew > boundEmpty {
		t.Errorf("refused %d, reply %d bytes, peak +%s", res.Refused, len(reply.Data), mib(grew))
	}
	// HTTP now needs the token too.
	if code, _, _ := h.post(t, strings.NewReader("{}\n"), 3, nil); code != http.StatusUnauthorized {
		t.Errorf("HTTP without the token: %d", code)
	}
}

// TestCrossSiteAndForgery: a cross-site form post is refused; a forged
// record with another message's hash is not a duplicate of it (conflict,
// evidence kept, counted on /metrics); a year-5138 timestamp is refused.
func TestCrossSiteAndForgery(t *testing.T) {
	h := newHostileFleet(t)
	good := archive.Message{Sig: h.sig, Timestamp: uint64(time.Now().Unix()) - 60, Topic: h.com.Topics[0], Payload: []byte("real"),
		Hash: fixture.Hash([]byte("real"))}
	line, _ := json.Marshal(good)
	code, _, _ := h.post(t, bytes.NewReader(line), int64(len(line)), map[string]string{"Origin": "http://evil.example", "Content-Type": "text/plain"})
	if code != http.StatusForbidden && code != http.StatusUnsupportedMediaType {
		t.Fatalf("cross-site text/plain post: HTTP %d", code)
	}
	code, _, _ = h.post(t, bytes.NewReader(line), int64(len(line)), map[string]string{"Origin": "http://evil.example"})
	if code != http.StatusForbidden {
		t.Fatalf("cross-site JSON post: HTTP %d", code)
	}
	forged := good
	forged.Payload, forged.Timestamp = []byte("forged"), good.Timestamp-5
	future := good
	future.Timestamp, future.Hash = 99999999999, fixture.Hash([]byte("future"))
	var body bytes.Buffer
	for _, m := range []archive.Message{forged, good, future} {
		j, _ := json.Marshal(m)
		body.Write(append(j, '\n'))
	}
	_, _, reply := h.post(t, &body, int64(body.Len()), nil)
	var res messages.IngestResult
	json.Unmarshal(reply, &res)
	if res.Stored != 1 || res.Conflicts != 1 || res.Refused != 1 {
		t.Fatalf("%s: want the forged one stored, the real one a conflict, the future one refused", reply)
	}
	codes := map[int]string{}
	for _, m := range res.Messages {
		codes[m.Index] = m.Code
	}
	if codes[1] != messages.CodeConflict || codes[2] != messages.CodeFuture {
		t.Fatalf("codes %v", codes)
	}
	resp, err := http.Get(h.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `archivefleet_ingest_messages_total{outcome="conflict"} 1`) {
		t.Error("conflict not counted on /metrics")
	}
	st := &messages.Store{Bus: h.b}
	cs, err := st.Conflicts(context.Background(), h.com.ID.String(), 10)
	if err != nil || len(cs) != 1 || string(cs[0].Refused.Payload) != "real" || cs[0].Stored == nil || string(cs[0].Stored.Payload) != "forged" {
		t.Fatalf("evidence %+v %v: want both contents", cs, err)
	}
}

// logMemory logs the fleet's Go heap figures from /metrics, to tell the
// heap from the rest of the resident size.
func logMemory(t *testing.T, f *fleetProc) {
	resp, err := http.Get(f.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		for _, k := range []string{"go_memstats_heap_inuse_bytes ", "go_memstats_heap_sys_bytes ", "go_memstats_next_gc_bytes ", "process_resident_memory_bytes "} {
			if strings.HasPrefix(l, k) {
				out = append(out, l)
			}
		}
	}
	t.Logf("memory after: %s", strings.Join(out, "; "))
}
