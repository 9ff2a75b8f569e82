package messages

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

func jsonLines(t *testing.T, msgs ...archive.Message) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, m := range msgs {
		j, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(append(j, '\n'))
	}
	return b.Bytes()
}

func TestBatchReader(t *testing.T) {
	cases := []struct {
		name, in string
		want     []string // raw messages
		err      error    // after them
	}{
		{"array", ` [ {"a":1} , {"b":"x]}"} ] `, []string{`{"a":1}`, `{"b":"x]}"}`}, nil},
		{"empty array", `[]`, nil, nil},
		{"escaped quote", `[{"a":"\"}"}]`, []string{`{"a":"\"}"}`}, nil},
		{"nested", `[{"a":[{"b":{}}]},{}]`, []string{`{"a":[{"b":{}}]}`, `{}`}, nil},
		{"bare values", `[1,"s",null]`, []string{`1`, `"s"`, `null`}, nil},
		{"lines", "{\"a\":1}\n\n  {\"b\":2}  \r\n{}", []string{`{"a":1}`, `{"b":2}`, `{}`}, nil},
		{"empty", "  \n ", nil, ErrMalformedBatch},
		{"unclosed array", `[{"a":1}`, []string{`{"a":1}`}, ErrMalformedBatch},
		{"missing comma", `[{"a":1} {"b":2}]`, []string{`{"a":1}`}, ErrMalformedBatch},
		{"trailing comma", `[{"a":1},]`, []string{`{"a":1}`}, ErrMalformedBatch},
		{"after the array", `[{"a":1}] x`, []string{`{"a":1}`}, ErrMalformedBatch},
		{"cut in a string", `[{"a":"x`, nil, ErrMalformedBatch},
		{"over the limit", `[{"a":"` + strings.Repeat("x", 200) + `"}]`, nil, ErrBatchTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := NewBatchReader(strings.NewReader(c.in), 100, nil)
			var got []string
			var err error
			for {
				var raw []byte
				raw, err = r.Next()
				if err != nil {
					break
				}
				got = append(got, string(raw))
			}
			if strings.Join(got, "|") != strings.Join(c.want, "|") {
				t.Errorf("messages %q, want %q", got, c.want)
			}
			if c.err == nil && err != io.EOF || c.err != nil && !errors.Is(err, c.err) {
				t.Errorf("error %v, want %v", err, c.err)
			}
		})
	}
}

func TestBatchReaderReservesForLargeMessages(t *testing.T) {
	big := `{"payload":"` + strings.Repeat("ab", 1<<20) + `"}`
	var asked []int64
	r := NewBatchReader(strings.NewReader(`[{}, `+big+`]`), MaxBatchBytes, func(n int64) error {
		asked = append(asked, n)
		if n > 4<<20 {
			return ErrBusy
		}
		return nil
	})
	if raw, err := r.Next(); err != nil || string(raw) != "{}" {
		t.Fatal(string(raw), err)
	}
	raw, err := r.Next()
	if err != nil || len(raw) != len(big) {
		t.Fatalf("%d bytes, %v", len(raw), err)
	}
	if len(asked) == 0 || asked[len(asked)-1] < int64(len(big)) {
		t.Fatalf("reservations %v for a %d-byte message", asked, len(big))
	}
	huge := `{"payload":"` + strings.Repeat("ab", 3<<20) + `"}`
	r = NewBatchReader(strings.NewReader(`[`+huge+`]`), MaxBatchBytes, func(n int64) error {
		if n > 4<<20 {
			return ErrBusy
		}
		return nil
	})
	if _, err := r.Next(); !errors.Is(err, ErrBusy) {
		t.Fatalf("a message over what the budget gives: %v", err)
	}
}

// TestIngestResultBounded: whatever a batch holds, the reply names at most
// MaxReportedMessages messages and counts every one.
func TestIngestResultBounded(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	register(t, b, start)
	s := &Store{Bus: b}
	srv := ingestServer(t, s, "")
	const n = 5000
	body := strings.Repeat("{}\n", n)
	resp, err := http.Post(messagesURL(srv, community.String()), "application/x-ndjson", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	reply, _ := io.ReadAll(resp.Body)
	var res IngestResult
	if err := json.Unmarshal(reply, &res); err != nil || resp.StatusCode != 200 {
		t.Fatalf("HTTP %d %v: %.300s", resp.StatusCode, err, reply)
	}
	if res.Refused != n || len(res.Messages) != MaxReportedMessages || res.Omitted != n-MaxReportedMessages {
		t.Fatalf("refused %d, %d entries, %d omitted; want %d, %d, %d", res.Refused, len(res.Messages), res.Omitted, n, MaxReportedMessages, n-MaxReportedMessages)
	}
	for i, m := range res.Messages {
		if m.Index != i || m.Code != CodeInvalid {
			t.Fatalf("entry %d: %+v", i, m)
		}
	}
	if len(reply) > 200<<10 {
		t.Errorf("reply is %d bytes", len(reply))
	}
}

func TestIngestFutureTimestamps(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	now := time.Unix(start+40*day, 0)
	register(t, b, start)
	s := &Store{Bus: b, Now: func() time.Time { return now }}
	soon := msg(uint64(now.Unix()) + 60)
	far := msg(uint64(now.Unix()) + uint64(MaxFutureSkew/time.Second) + 1)
	year5138 := msg(99999999999)
	res, err := s.Ingest(context.Background(), community, []archive.Message{soon, far, year5138})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stored != 1 || res.Refused != 2 {
		t.Fatalf("%+v: want the message a minute ahead stored, the others refused", res)
	}
	for _, m := range res.Messages {
		if m.Code != CodeFuture || !strings.Contains(m.Reason, "future:") {
			t.Errorf("entry %+v: want code future", m)
		}
	}
}

// TestForgedHashConflicts: a record carrying another message's hash never
// displaces it, nor is it displaced; the later one is answered conflict and
// kept aside, and a true re-send is still a duplicate.
func TestForgedHashConflicts(t *testing.T) {
	for _, size := range []int{40, InlinePayloadBytes + 1} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
			now := uint64(time.Now().Unix())
			register(t, b, now-day)
			reg := prometheus.NewRegistry()
			s := &Store{Bus: b, Metrics: NewMetrics(reg)}
			real := msgSized(now-60, size)
			forged := msgSized(now-30, size)
			forged.Hash = real.Hash
			ctx := context.Background()
			if res, err := s.Ingest(ctx, community, []archive.Message{forged}); err != nil || res.Stored != 1 {
				t.Fatalf("forged first: %+v %v", res, err)
			}
			res, err := s.Ingest(ctx, community, []archive.Message{real, forged})
			if err != nil {
				t.Fatal(err)
			}
			if res.Conflicts != 1 || res.Duplicates != 1 || len(res.Messages) != 1 || res.Messages[0].Code != CodeConflict || res.Messages[0].Index != 0 {
				t.Fatalf("%+v: want the real one a conflict, the forged one again a duplicate", res)
			}
			got := collect(t, s.Source(community), now-day, now)
			if len(got) != 1 || !bytes.Equal(got[0].Payload, forged.Payload) || got[0].Timestamp != forged.Timestamp {
				t.Fatalf("stored %d messages; want the first-stored (forged) record unchanged", len(got))
			}
			cs, err := s.Conflicts(ctx, community.String(), 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(cs) != 1 || cs[0].Stored == nil || !bytes.Equal(cs[0].Stored.Hash, real.Hash) || cs[0].Refused.Timestamp != real.Timestamp ||
				cs[0].Source != "fleet" || cs[0].PayloadBytes != size {
				t.Fatalf("evidence %+v", cs)
			}
			if size <= InlinePayloadBytes && !bytes.Equal(cs[0].Refused.Payload, real.Payload) {
				t.Error("the refused payload is not kept")
			}
			if size > InlinePayloadBytes {
				// Only the stored record's payload object remains.
				if _, err := b.Objects.GetInfo(ctx, PayloadObject(community, real.Hash, real.Payload)); !errors.Is(err, jetstream.ErrObjectNotFound) {
					t.Errorf("the refused payload's object: %v", err)
				}
				if _, err := b.Objects.GetInfo(ctx, PayloadObject(community, real.Hash, forged.Payload)); err != nil {
					t.Errorf("the stored payload's object: %v", err)
				}
			}
			if v := testutil.ToFloat64(s.Metrics.messages.WithLabelValues(string(Conflict))); v != 1 {
				t.Errorf("conflict counter %v", v)
			}
			// The same conflicting record again: no new evidence.
			if res, _ := s.Ingest(ctx, community, []archive.Message{real}); res.Conflicts != 1 {
				t.Fatalf("%+v", res)
			}
			if cs, _ := s.Conflicts(ctx, community.String(), 10); len(cs) != 1 {
				t.Fatalf("%d evidence records after a repeat", len(cs))
			}
		})
	}
}

// TestNATSIngest: the token is required as over HTTP, and a reply that
// would not fit the server's max payload is cut to fit and says so.
func TestNATSIngest(t *testing.T) {
	ns := testenv.NATS(t, func(o *server.Options) { o.MaxPayload = 96 << 10 })
	b := testenv.Bus(t, ns, bus.Config{})
	register(t, b, start)
	s := &Store{Bus: b}
	stop, err := s.ServeNATS(context.Background(), "secret")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	request := func(token string, body []byte) map[string]any {
		t.Helper()
		m := nats.NewMsg(bus.SubjectIngest(community.String()))
		m.Data = body
		if token != "" {
			m.Header.Set("Authorization", "Bearer "+token)
		}
		reply, err := b.NC.RequestMsg(m, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(reply.Data) > 96<<10 {
			t.Fatalf("reply of %d bytes", len(reply.Data))
		}
		var out map[string]any
		if err := json.Unmarshal(reply.Data, &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	good := jsonLines(t, msg(start+10))
	if r := request("", good); r["code"] != "unauthorized" {
		t.Fatalf("no token: %v", r)
	}
	if r := request("wrong", good); r["code"] != "unauthorized" {
		t.Fatalf("wrong token: %v", r)
	}
	if r := request("secret", good); r["stored"] != 1.0 {
		t.Fatalf("with the token: %v", r)
	}
	// 1,000 refusals with long reasons: over 96 KiB as a whole.
	var body bytes.Buffer
	for range 1000 {
		body.WriteString(`{"bogus":"` + strings.Repeat("x", 60) + `"}` + "\n")
	}
	r := request("secret", body.Bytes())
	if r["refused"] != 1000.0 || r["omitted"] == nil || r["omitted"].(float64) == 0 {
		t.Fatalf("refused %v, omitted %v", r["refused"], r["omitted"])
	}
}

// TestIngestBusy: with the budget taken, a request is answered 503 with
// Retry-After before its body is read.
func TestIngestBusy(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	register(t, b, start)
	budget, err := NewBudget(maxLeaseFor(MaxBatchBytes), 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	s := &Store{Bus: b, Budget: budget}
	srv := ingestServer(t, s, "")
	hold, err := budget.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := hold.Grow(context.Background(), maxLeaseFor(MaxBatchBytes)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(messagesURL(srv, community.String()), "application/json", bytes.NewReader(jsonLines(t, msg(start))))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("HTTP %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	hold.Release()
	resp, err = http.Post(messagesURL(srv, community.String()), "application/json", bytes.NewReader(jsonLines(t, msg(start))))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP %d after the budget was released", resp.StatusCode)
	}
}

// TestSlowBodyIsCut: a body dripping in is cut off after the grace, with
// what was stored so far.
func TestSlowBodyIsCut(t *testing.T) {
	defer func(g time.Duration) { bodyGrace = g }(bodyGrace)
	bodyGrace = 500 * time.Millisecond
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	register(t, b, start)
	s := &Store{Bus: b}
	srv := ingestServer(t, s, "")
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	first := jsonLines(t, msg(start))
	head := "POST /v1/communities/" + community.String() + "/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n" +
		"Content-Length: 100000\r\n\r\n"
	if _, err := conn.Write(append([]byte(head), first...)); err != nil {
		t.Fatal(err)
	}
	// Then nothing more: the server must answer on its own.
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufioReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res IngestResult
	json.NewDecoder(resp.Body).Decode(&res)
	if resp.StatusCode != http.StatusRequestTimeout || res.Stored != 1 || res.Error == "" {
		t.Fatalf("HTTP %d %+v: want 408 with the first message stored", resp.StatusCode, res)
	}
}

func bufioReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }

// TestBudgetGrowersTakeTurns: requests whose large messages grow their
// buffers step by step at the same time all finish; holding part of what
// each needs, they once waited for each other until all were refused.
func TestBudgetGrowersTakeTurns(t *testing.T) {
	budget, err := NewBudget(DefaultIngestMemory, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	const n = 12
	errs := make(chan error, n)
	for range n {
		go func() {
			l, err := budget.Acquire(context.Background())
			if err != nil {
				errs <- err
				return
			}
			defer l.Release()
			for size := int64(512 << 10); size <= 60<<20; size *= 2 {
				if err := l.Grow(context.Background(), maxLeaseFor(size)); err != nil {
					errs <- err
					return
				}
				runtime.Gosched()
			}
			l.Shrink()
			errs <- nil
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	// Everything given back: the whole budget can be taken again.
	l, err := budget.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Grow(context.Background(), maxLeaseFor(MaxBatchBytes)); err != nil {
		t.Fatal(err)
	}
	l.Release()
}
