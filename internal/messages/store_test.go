package messages

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

const start = 1_700_006_400 // a UTC midnight

var (
	communityKey = bytes.Repeat([]byte{7}, 32)
	community    = fixture.ID(communityKey)
	topic        = archive.Topic{1}
	signers      = fixture.Signers(1)
)

// register puts the test community in the registry, archiving topic from since.
func register(t *testing.T, b *bus.Bus, since uint64) {
	t.Helper()
	com := fixture.CommunityFromKey(communityKey, 7*24*time.Hour, since, topic)
	if err := registry.New(b.Communities).Put(context.Background(), com); err != nil {
		t.Fatal(err)
	}
}

// msgSized is a message on topic at ts with a payload of the given size (> 0).
func msgSized(ts uint64, payload int) archive.Message {
	return fixture.Messages{N: 1, From: ts, Topics: []archive.Topic{topic}, Signers: signers, Size: payload}.Make()[0]
}

func msg(ts uint64) archive.Message { return msgSized(ts, 40) }

// ingestServer serves s's ingest endpoint, requiring token if not empty,
// until the test ends.
func ingestServer(t *testing.T, s *Store, token string) *httptest.Server {
	mux := http.NewServeMux()
	mux.Handle(IngestPath, s.Handler(token))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// messagesURL is the ingest URL of community id (as written in the path).
func messagesURL(srv *httptest.Server, id string) string {
	return srv.URL + "/v1/communities/" + id + "/messages"
}

func collect(t *testing.T, src archive.Source, from, to uint64) []archive.Message {
	t.Helper()
	var out []archive.Message
	for m, err := range src.Messages(context.Background(), from, to) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func TestRangeReadCostAndDuplicates(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	register(t, b, start)
	s := &Store{Bus: b}
	ctx := context.Background()
	var all []archive.Message
	for d := uint64(0); d < 60; d++ {
		for i := uint64(0); i < 20; i++ {
			all = append(all, msg(start+d*day+i*3600))
		}
	}
	if res, err := s.Ingest(ctx, community, all); err != nil || res.Stored != len(all) {
		t.Fatalf("ingest: %+v %v", res, err)
	}
	src := s.Source(community)
	before := s.Scanned()
	week := collect(t, src, start+10*day, start+17*day)
	if len(week) != 7*20 {
		t.Fatalf("week read %d messages, want 140", len(week))
	}
	if scanned := s.Scanned() - before; scanned != 7*20 {
		t.Fatalf("reading one week scanned %d stored messages of %d; want only the week's 140", scanned, len(all))
	}
	for i := 1; i < len(week); i++ {
		if week[i-1].Timestamp > week[i].Timestamp {
			t.Fatal("messages not ordered by timestamp")
		}
	}
	// A message sent again is a duplicate however late it comes: its bucket
	// holds it. A new one in the same week is stored.
	extra := msg(start + 12*day + 5)
	if res, _ := s.Ingest(ctx, community, []archive.Message{extra, all[0], all[500], extra}); res.Stored != 1 || res.Duplicates != 3 {
		t.Fatalf("re-ingest: %+v", res)
	}
	if got := collect(t, src, start+10*day, start+17*day); len(got) != 141 {
		t.Fatalf("after one more message the week has %d, want 141", len(got))
	}
	// Reads leave no consumers behind (a server limit caps them).
	si, err := b.JS.Stream(ctx, bus.StreamMessages)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := si.Info(ctx)
	if info.State.Consumers != 0 {
		t.Fatalf("%d consumers left on the message stream after reads", info.State.Consumers)
	}
	// Messages written together share records: at most one per bucket of
	// a day per write, here one per day for the first batch.
	if info.State.Msgs > 60+1 || info.State.NumSubjects > 60 {
		t.Fatalf("stream holds %d records on %d subjects for %d messages in 60 days", info.State.Msgs, info.State.NumSubjects, len(all)+1)
	}
	if got := collect(t, src, start, start+60*day); len(got) != len(all)+1 {
		t.Fatalf("read %d messages back, want %d", len(got), len(all)+1)
	}
	// Partial-day bounds are exact.
	if got := collect(t, src, start+3600, start+2*3600+1); len(got) != 2 {
		t.Fatalf("two-hour range read %d messages, want 2", len(got))
	}
}

// TestLateMessagesAreFound stores messages, takes a build's watermark, marks
// their window archived, and checks that what arrives afterwards for that
// window is answered late, found by LateWindows and read by Between, and
// nothing else.
func TestLateMessagesAreFound(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	register(t, b, start)
	s := &Store{Bus: b}
	ctx := context.Background()
	const iv = 7 * day
	onTime := []archive.Message{msg(start + 10), msg(start + day), msg(start + iv + 5)}
	if res, err := s.Ingest(ctx, community, onTime); err != nil || res.Stored != 3 {
		t.Fatalf("ingest: %+v %v", res, err)
	}
	w, err := s.Fence(ctx, community)
	if err != nil || w == 0 {
		t.Fatalf("watermark %d, %v", w, err)
	}
	// The build of [start, start+2iv) committed.
	if _, err := (&state.Store{KV: b.State}).Put(ctx, community.String(), &state.Build{LastEnd: start + 2*iv, Fence: 1}, 0); err != nil {
		t.Fatal(err)
	}
	late := []archive.Message{msg(start + 3*day), msg(start + iv + 100), msg(start + iv + 200)}
	current := msg(start + 2*iv + 1)
	res, err := s.Ingest(ctx, community, append(late, current, onTime[0]))
	if err != nil || res.Late != 3 || res.Stored != 1 || res.Duplicates != 1 || len(res.Messages) != 3 {
		t.Fatalf("ingest after the build: %+v %v", res, err)
	}
	w2, _ := s.Fence(ctx, community)
	wins, n, err := s.LateWindows(ctx, community, w, w2, start, start+2*iv, iv*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := []archive.Window{{From: start, To: start + iv}, {From: start + iv, To: start + 2*iv}}
	if n != 3 || fmt.Sprint(wins) != fmt.Sprint(want) {
		t.Fatalf("late windows %v (%d messages), want %v (3)", wins, n, want)
	}
	if got := collect(t, s.Between(community, w, w2), start, start+2*iv); len(got) != 3 {
		t.Fatalf("late source read %d messages, want the 3 late ones", len(got))
	}
	if got := collect(t, s.Between(community, 0, w), start, start+2*iv); len(got) != 3 {
		t.Fatalf("the build's source read %d messages, want the 3 on time", len(got))
	}
	// Nothing after w2 is late for a build that saw w2.
	if wins, n, _ := s.LateWindows(ctx, community, w2, w2, start, start+2*iv, iv*time.Second); n != 0 || len(wins) != 0 {
		t.Fatalf("late windows after the watermark: %v", wins)
	}
}

// TestIngestOutcomes sends one mixed batch through every path: each message
// gets its outcome, refused ones are never stored, and large messages (1 MiB
// with the server's default limits, 5 MB where the server's max payload is
// raised for the NATS path) are stored and read back whole.
func TestIngestOutcomes(t *testing.T) {
	ns := testenv.NATS(t, func(o *server.Options) { o.MaxPayload = 16 << 20 })
	b := testenv.Bus(t, ns, bus.Config{})
	now := uint64(time.Now().Unix())
	register(t, b, now-30*day)
	s := &Store{Bus: b}
	stop, err := s.ServeNATS(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	srv := ingestServer(t, s, "")

	for _, path := range []string{"http", "nats"} {
		t.Run(path, func(t *testing.T) {
			ts := now - 2*day
			good := msg(ts)
			foreign := msg(ts)
			foreign.Topic = archive.Topic{9, 9, 9, 9}
			early := msg(now - 40*day)
			badSig := msg(ts)
			badSig.Sig = badSig.Sig[:10]
			huge := msgSized(ts, 1<<20)
			big := msgSized(ts, 5_000_000)
			disabledTopic := msg(ts) // a stand-in for the cap check below: the batch must fit a request
			disabledTopic.Topic = archive.Topic{8}
			longHash := msg(ts)
			longHash.Hash = bytes.Repeat([]byte{1}, MaxHashBytes+1)
			var lines [][]byte
			for _, m := range []archive.Message{good, foreign, early, badSig, huge, big, disabledTopic, longHash, good} {
				j, _ := json.Marshal(m)
				lines = append(lines, j)
			}
			lines = append(lines, []byte(`{"sig":"0x04","bogus":1}`))
			body := bytes.Join(lines, []byte("\n"))
			var res IngestResult
			if path == "http" {
				resp, err := http.Post(messagesURL(srv, community.String()), "application/x-ndjson", bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d", resp.StatusCode)
				}
				if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
					t.Fatal(err)
				}
			} else {
				reply, err := b.NC.Request(bus.SubjectIngest(community.String()), body, 30*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal(reply.Data, &res); err != nil {
					t.Fatalf("%v: %s", err, reply.Data)
				}
			}
			if res.Stored != 3 || res.Duplicates != 1 || res.Refused != 6 || res.Late != 0 || res.Failed != 0 {
				t.Fatalf("outcomes %+v; want 3 stored (one of 1 MiB, one of 5 MB), 1 duplicate, 6 refused", res)
			}
			reasons := map[int]string{1: "not one of the community's topics", 2: "before the community's archives start",
				3: "sig must be", 6: "not one of the community's topics", 7: "hash is 65 bytes", 9: "unknown field"}
			for _, r := range res.Messages {
				if r.Outcome != Refused || !strings.Contains(r.Reason, reasons[r.Index]) {
					t.Errorf("message %d: %s %q; want refused with %q", r.Index, r.Outcome, r.Reason, reasons[r.Index])
				}
				delete(reasons, r.Index)
			}
			if len(reasons) != 0 {
				t.Errorf("no outcome for messages %v", reasons)
			}
			got := collect(t, s.Source(community), now-50*day, now)
			want := map[string]int{string(good.Hash): 40, string(huge.Hash): 1 << 20, string(big.Hash): 5_000_000}
			for _, m := range got {
				if _, ok := want[string(m.Hash)]; !ok {
					continue // stored by the other path
				}
				if len(m.Payload) != want[string(m.Hash)] {
					t.Fatalf("message %s read back with %d payload bytes, want %d", m.Hash, len(m.Payload), want[string(m.Hash)])
				}
				delete(want, string(m.Hash))
			}
			if len(want) != 0 {
				t.Fatalf("%d stored messages not read back", len(want))
			}
			for _, m := range got {
				for _, r := range []archive.Message{foreign, early, badSig, disabledTopic, longHash} {
					if bytes.Equal(m.Hash, r.Hash) && r.Topic == m.Topic && m.Timestamp == r.Timestamp && len(m.Sig) == len(r.Sig) {
						t.Fatalf("refused message %s was stored", r.Hash)
					}
				}
			}
		})
	}
}

// TestIngestRefusesOverCap sends a message one byte over the archive cap,
// as its own request (it is 60 MB as hex JSON), and one just under.
func TestIngestRefusesOverCap(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	register(t, b, start)
	s := &Store{Bus: b}
	srv := ingestServer(t, s, "")
	for _, tt := range []struct {
		payload int
		want    Outcome
	}{{archive.MaxMessageBytes - 65 + 1, Refused}, {archive.MaxMessageBytes - 65, Stored}} {
		m := msgSized(start, tt.payload)
		body, _ := json.Marshal(m)
		resp, err := http.Post(messagesURL(srv, community.String()), "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var res IngestResult
		err = json.NewDecoder(resp.Body).Decode(&res)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, %v", resp.StatusCode, err)
		}
		if got := map[Outcome]int{Refused: res.Refused, Stored: res.Stored}[tt.want]; got != 1 {
			t.Fatalf("payload of %d bytes: %+v, want %s", tt.payload, res, tt.want)
		}
		if tt.want == Refused && !strings.Contains(res.Messages[0].Reason, "archive cap") {
			t.Fatalf("reason %q", res.Messages[0].Reason)
		}
	}
	got := collect(t, s.Source(community), start, start+1)
	if len(got) != 1 || len(got[0].Payload) != archive.MaxMessageBytes-65 {
		t.Fatalf("read back %d messages; want the one at the cap", len(got))
	}
}

// TestStreamCostPerMessage compares what a stored message costs in the
// stream with the JSON records of earlier versions (figures in the log).
func TestStreamCostPerMessage(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	register(t, b, start)
	s := &Store{Bus: b}
	ctx := context.Background()
	const n = 2000
	msgs := make([]archive.Message, n)
	for i := range msgs {
		msgs[i] = msgSized(start+uint64(i), 256)
	}
	if _, err := s.Ingest(ctx, community, msgs); err != nil {
		t.Fatal(err)
	}
	si, _ := b.JS.Stream(ctx, bus.StreamMessages)
	info, _ := si.Info(ctx)
	perMsg := float64(info.State.Bytes) / n
	// The same messages as earlier versions stored them: JSON on the day
	// subject with a Nats-Msg-Id, measured on the same stream.
	for i := range msgs {
		j, _ := json.Marshal(msgs[i])
		if _, err := b.JS.Publish(ctx, fmt.Sprintf("msgs.%s.%d", community, msgs[i].Timestamp/day), j,
			jetstream.WithMsgID("m:"+community.String()+":"+hex.EncodeToString(msgs[i].Hash))); err != nil {
			t.Fatal(err)
		}
	}
	info2, _ := si.Info(ctx)
	legacy := float64(info2.State.Bytes-info.State.Bytes) / n
	t.Logf("stream bytes per message with a 256-byte payload: %.0f binary record, %.0f JSON record of earlier versions (%.0f%%)",
		perMsg, legacy, 100*perMsg/legacy)
	if perMsg >= legacy {
		t.Fatalf("binary records cost %.0f bytes each, not less than JSON's %.0f", perMsg, legacy)
	}
	// Both are read, each message once.
	if got := collect(t, s.Source(community), start, start+n); len(got) != n {
		t.Fatalf("read %d messages from both kinds of record, want %d", len(got), n)
	}
}

func TestIngestRejectsBadRequests(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	s := &Store{Bus: b}
	srv := ingestServer(t, s, "secret")
	register(t, b, start)
	good, _ := json.Marshal([]archive.Message{msg(start)})
	unknown := fixture.ID(bytes.Repeat([]byte{8}, 32)).String()
	const js = "application/json"
	tests := []struct {
		name, id, token, ctype, body string
		header                       map[string]string
		code                         int
	}{
		{"no token", community.String(), "", js, string(good), nil, http.StatusUnauthorized},
		{"wrong token", community.String(), "nope", js, string(good), nil, http.StatusUnauthorized},
		{"bad id", "0x..%2F..%2Fetc", "secret", js, string(good), nil, http.StatusBadRequest},
		{"bad json", community.String(), "secret", js, "[{", nil, http.StatusBadRequest},
		{"empty", community.String(), "secret", js, " ", nil, http.StatusBadRequest},
		{"unknown community", unknown, "secret", js, string(good), nil, http.StatusNotFound},
		// What a web page may send anywhere without a preflight.
		{"form post", community.String(), "secret", "application/x-www-form-urlencoded", string(good), nil, http.StatusUnsupportedMediaType},
		{"text/plain", community.String(), "secret", "text/plain", string(good), nil, http.StatusUnsupportedMediaType},
		{"no content type", community.String(), "secret", "", string(good), nil, http.StatusUnsupportedMediaType},
		{"cross-site origin", community.String(), "secret", js, string(good), map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden},
		{"cross-site fetch", community.String(), "secret", js, string(good), map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"over the cap", community.String(), "secret", js, string(good), map[string]string{"Content-Length": strconv.Itoa(MaxBatchBytes + 1)}, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, messagesURL(srv, tt.id), strings.NewReader(tt.body))
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			if cl := tt.header["Content-Length"]; cl != "" {
				// Claim a body over the cap; the server must answer without reading it.
				req.ContentLength, _ = strconv.ParseInt(cl, 10, 64)
				req.Body = io.NopCloser(io.LimitReader(zeros{}, req.ContentLength))
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.code {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.code)
			}
		})
	}
	if _, err := s.Ingest(context.Background(), fixture.ID(bytes.Repeat([]byte{8}, 32)), []archive.Message{msg(1)}); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("ingest for an unregistered community: %v", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// markLegacy stands for a deployment upgraded with records of earlier
// layouts in MESSAGES: the current layout's records begin after what the
// stream holds now. s forgets what it knew.
func markLegacy(t *testing.T, b *bus.Bus, s *Store) {
	t.Helper()
	ctx := context.Background()
	str, err := b.JS.Stream(ctx, bus.StreamMessages)
	if err != nil {
		t.Fatal(err)
	}
	b.State.Delete(ctx, bus.KeyMessagesLayout)
	v, _ := json.Marshal(map[string]uint64{"recordsFrom": str.CachedInfo().State.LastSeq + 1})
	if _, err := b.State.Put(ctx, bus.KeyMessagesLayout, v); err != nil {
		t.Fatal(err)
	}
	s.layoutMu.Lock()
	s.layoutKnown = false
	s.layoutMu.Unlock()
}
