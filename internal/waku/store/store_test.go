package store

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/testenv"
	"github.com/archivefleet/archivefleet/internal/waku/rpc"
	"github.com/archivefleet/archivefleet/internal/waku/store/storepb"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// The client against servers that lie, the service's store on its own and
// the codec. The client against our service over the network, with the
// store fed by relay, is tested in internal/waku/node, as is js-waku's store
// client against our service (store_jswaku_test.go).

const (
	ctA = "/archivefleet/1/store-a/proto"
	ctB = "/archivefleet/1/store-b/proto"
)

var (
	shard32 = wakuwire.ShardTopic(16, 32)
	shard64 = wakuwire.ShardTopic(16, 64)
)

func marshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func frame(b []byte) []byte {
	return append(binary.AppendUvarint(nil, uint64(len(b))), b...)
}

func TestStoreCodec(t *testing.T) {
	cursor := bytes.Repeat([]byte{0x11}, 32)
	req := &storepb.StoreQueryRequest{RequestId: "r", IncludeData: true, PubsubTopic: proto.String("/p"), ContentTopics: []string{"a", "b"},
		TimeStart: proto.Int64(1), TimeEnd: proto.Int64(-1), MessageHashes: [][]byte{{0xaa}},
		PaginationCursor: cursor, PaginationForward: true, PaginationLimit: proto.Uint64(50)}
	// Tags as @waku/proto 0.0.8 store_v3.js writes them (w.uint32(10), 16,
	// 82, 90, 96, 104, 162, 410, 416, 424), sint64 zigzag.
	want := "0a0172" + "1001" + "52022f70" + "5a0161" + "5a0162" + "6002" + "6801" + "a20101aa" +
		"9a0320" + strings.Repeat("11", 32) + "a00301" + "a80332"
	wireReq := marshal(t, req)
	if got := hex.EncodeToString(wireReq); got != want {
		t.Fatalf("request\n got %s\nwant %s", got, want)
	}
	back, err := decodeRequest(wireReq)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(back, req) {
		t.Fatalf("round trip\n got %v\nwant %v", back, req)
	}

	// A response as nwaku's rpc_codec.nim writes it.
	m := &wakuwire.Message{Payload: []byte("hi"), ContentTopic: "/a/1/b/proto", Timestamp: 5}
	h := wakuwire.Hash("/p", m)
	kv := append(append([]byte{0x0a, 0x20}, h[:]...), 0x12, byte(len(m.Marshal())))
	kv = append(append(kv, m.Marshal()...), 0x1a, 0x02, '/', 'p')
	wire := append([]byte{0x0a, 0x01, 'r', 0x50, 0xc8, 0x01, 0x5a, 0x02, 'O', 'K', 0xa2, 0x01, byte(len(kv))}, kv...)
	wire = append(append(wire, 0x9a, 0x03, 0x20), h[:]...)
	wire = append(wire, 0xf8, 0x07, 0x01) // unknown field 127, skipped
	resp, err := decodeResponse(wire)
	if err != nil {
		t.Fatal(err)
	}
	if resp.RequestId != "r" || resp.StatusCode == nil || resp.GetStatusCode() != 200 || resp.GetStatusDesc() != "OK" || len(resp.Messages) != 1 ||
		!bytes.Equal(resp.Messages[0].MessageHash, h[:]) || !bytes.Equal(marshal(t, resp.Messages[0].Message), m.Marshal()) ||
		resp.Messages[0].GetPubsubTopic() != "/p" || !bytes.Equal(resp.PaginationCursor, h[:]) {
		t.Fatalf("decoded %v", resp)
	}
	// Our encoder writes the same bytes (field order as nwaku's).
	ours := answer("r", Success, "OK")
	ours.Messages = []*storepb.WakuMessageKeyValue{{MessageHash: h[:], Message: toProto(m), PubsubTopic: proto.String("/p")}}
	ours.PaginationCursor = h[:]
	if got := marshal(t, ours); !bytes.Equal(got, wire[:len(wire)-3]) {
		t.Fatalf("response\n got %x\nwant %x", got, wire[:len(wire)-3])
	}
	for _, bad := range [][]byte{{0x50}, {0x0a, 0x05, 'x'}, {0x52, 0x01, 0x01}, {0xa2, 0x01, 0x02, 0x12, 0x00}} {
		if _, err := decodeResponse(bad); err == nil {
			t.Errorf("%x accepted", bad)
		}
	}
}

func TestStoreErrorRetryable(t *testing.T) {
	for code, want := range map[uint32]bool{300: false, 400: false, 429: true, 500: true, 503: true, 504: true} {
		if got := (&rpc.StatusError[Status]{Code: Status(code)}).IsRetryable(); got != want {
			t.Errorf("IsRetryable(%d) = %v", code, got)
		}
	}
}

// lyingStore is a store node that answers with whatever respond builds for
// the decoded request.
func lyingStore(t *testing.T, respond func(req *storepb.StoreQueryRequest) []byte) peer.AddrInfo {
	t.Helper()
	srv := testenv.Libp2pHost(t, true)
	srv.SetStreamHandler(Protocol, func(s network.Stream) {
		defer s.Close()
		b, err := rpc.ReadFrame(bufio.NewReader(s), MaxRequestSize)
		var req *storepb.StoreQueryRequest
		if err == nil {
			req, err = decodeRequest(b)
		}
		if err != nil {
			t.Errorf("lying store: %v", err)
			_ = s.Reset()
			return
		}
		if out := respond(req); out != nil {
			_, _ = s.Write(out)
		}
	})
	return peer.AddrInfo{ID: srv.ID(), Addrs: srv.Addrs()}
}

func TestStoreClientRefusesLies(t *testing.T) {
	t.Parallel()
	now := time.Now().UnixNano()
	msg := func(text string, ts int64) (*wakuwire.Message, [32]byte) {
		m := &wakuwire.Message{Payload: []byte(text), ContentTopic: ctA, Timestamp: ts}
		return m, wakuwire.Hash(shard32, m)
	}
	m1, h1 := msg("one", now)
	m2, h2 := msg("two", now+1)
	m3, h3 := msg("three", now+2)
	kv := func(m *wakuwire.Message, h [32]byte) *storepb.WakuMessageKeyValue {
		return &storepb.WakuMessageKeyValue{MessageHash: h[:], Message: toProto(m), PubsubTopic: proto.String(shard32)}
	}
	ok := func(id string, cursor []byte, kvs ...*storepb.WakuMessageKeyValue) []byte {
		r := &storepb.StoreQueryResponse{RequestId: id, StatusCode: proto.Uint32(200), StatusDesc: proto.String("OK"), Messages: kvs, PaginationCursor: cursor}
		return frame(marshal(t, r))
	}
	client := Client{Host: testenv.Libp2pHost(t, false)}
	q := Query{PubsubTopic: shard32, ContentTopics: []string{ctA}, Forward: true, IncludeData: true, Limit: 2}

	for _, tc := range []struct {
		name    string
		respond func(*storepb.StoreQueryRequest) []byte
		q       *Query
		want    string // in the ErrResponse
		code    uint32 // or a status error
	}{
		{name: "message under another message's hash", want: "hashes to", respond: func(r *storepb.StoreQueryRequest) []byte {
			lie := kv(m1, h1)
			lie.Message = toProto(m2)
			return ok(r.RequestId, nil, lie)
		}},
		{name: "message under another pubsub topic", want: "hashes to", respond: func(r *storepb.StoreQueryRequest) []byte {
			lie := kv(m1, h1)
			lie.PubsubTopic = proto.String(shard64)
			return ok(r.RequestId, nil, lie)
		}},
		{name: "honest hash, another content topic", want: "content topic", respond: func(r *storepb.StoreQueryRequest) []byte {
			m := &wakuwire.Message{Payload: []byte("x"), ContentTopic: ctB, Timestamp: now}
			return ok(r.RequestId, nil, kv(m, wakuwire.Hash(shard32, m)))
		}},
		{name: "honest hash, another pubsub topic", want: "pubsub topic", respond: func(r *storepb.StoreQueryRequest) []byte {
			lie := &storepb.WakuMessageKeyValue{MessageHash: func() []byte { h := wakuwire.Hash(shard64, m1); return h[:] }(), Message: toProto(m1), PubsubTopic: proto.String(shard64)}
			return ok(r.RequestId, nil, lie)
		}},
		{name: "outside the time range", q: &Query{PubsubTopic: shard32, TimeEnd: now - 1, IncludeData: true}, want: "time range", respond: func(r *storepb.StoreQueryRequest) []byte {
			return ok(r.RequestId, nil, kv(m1, h1))
		}},
		{name: "not looked up", q: &Query{Hashes: [][32]byte{h2}, IncludeData: true}, want: "not looked up", respond: func(r *storepb.StoreQueryRequest) []byte {
			return ok(r.RequestId, nil, kv(m1, h1))
		}},
		{name: "newest first", want: "not after", respond: func(r *storepb.StoreQueryRequest) []byte {
			return ok(r.RequestId, nil, kv(m2, h2), kv(m1, h1))
		}},
		{name: "more than the limit", want: "limit", respond: func(r *storepb.StoreQueryRequest) []byte {
			return ok(r.RequestId, nil, kv(m1, h1), kv(m2, h2), kv(m3, h3))
		}},
		{name: "no data although asked", want: "no data", respond: func(r *storepb.StoreQueryRequest) []byte {
			return ok(r.RequestId, nil, &storepb.WakuMessageKeyValue{MessageHash: h1[:]})
		}},
		{name: "message without topic", want: "together", respond: func(r *storepb.StoreQueryRequest) []byte {
			lie := kv(m1, h1)
			lie.PubsubTopic = nil
			return ok(r.RequestId, nil, lie)
		}},
		{name: "cursor not the last message", want: "cursor", respond: func(r *storepb.StoreQueryRequest) []byte {
			return ok(r.RequestId, h1[:], kv(m1, h1), kv(m2, h2))
		}},
		{name: "cursor on an empty page", want: "empty page", respond: func(r *storepb.StoreQueryRequest) []byte {
			return ok(r.RequestId, h1[:])
		}},
		{name: "same page again, same cursor", want: "asked with", respond: func(r *storepb.StoreQueryRequest) []byte {
			return ok(r.RequestId, h2[:], kv(m1, h1), kv(m2, h2))
		}},
		{name: "two pages in a circle", want: "repeated", respond: func(r *storepb.StoreQueryRequest) []byte {
			if bytes.Equal(r.PaginationCursor, h2[:]) {
				return ok(r.RequestId, h3[:], kv(m3, h3))
			}
			return ok(r.RequestId, h2[:], kv(m1, h1), kv(m2, h2))
		}},
		{name: "wrong request id", want: "request id", respond: func(r *storepb.StoreQueryRequest) []byte { return ok("not-"+r.RequestId, nil) }},
		{name: "no status", want: "no status", respond: func(r *storepb.StoreQueryRequest) []byte {
			return frame(protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), r.RequestId))
		}},
		{name: "garbage", want: "bad store response", respond: func(*storepb.StoreQueryRequest) []byte { return frame([]byte{0x0a, 0xff, 0xff}) }},
		{name: "frame over the cap", want: "frame too large", respond: func(*storepb.StoreQueryRequest) []byte {
			return protowire.AppendVarint(nil, MaxResponseSize(2)+1)
		}},
		{name: "closed without answer", want: "stream ended", respond: func(*storepb.StoreQueryRequest) []byte { return nil }},
		{name: "rate limited, request id N/A", code: 429, respond: func(*storepb.StoreQueryRequest) []byte {
			return frame(marshal(t, &storepb.StoreQueryResponse{RequestId: "N/A", StatusCode: proto.Uint32(429), StatusDesc: proto.String("TOO_MANY_REQUESTS")}))
		}},
		{name: "nwaku's 300 with no request id", code: 300, respond: func(*storepb.StoreQueryRequest) []byte {
			return frame(marshal(t, &storepb.StoreQueryResponse{StatusCode: proto.Uint32(300), StatusDesc: proto.String("BAD_RESPONSE: archive error: DRIVER_ERROR: cursor not found")}))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ai := lyingStore(t, tc.respond)
			qq := q
			if tc.q != nil {
				qq = *tc.q
			}
			_, err := client.QueryAll(t.Context(), ai, qq, func(Page) error { return nil })
			if tc.code != 0 {
				var serr *rpc.StatusError[Status]
				if !errors.As(err, &serr) || serr.Code != Status(tc.code) || serr.Desc == "" {
					t.Fatalf("err = %v, want status %d", err, tc.code)
				}
				return
			}
			if !errors.Is(err, ErrResponse) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrResponse with %q", err, tc.want)
			}
		})
	}

	t.Run("an honest page is accepted", func(t *testing.T) {
		ai := lyingStore(t, func(r *storepb.StoreQueryRequest) []byte {
			if r.PaginationCursor != nil {
				return ok(r.RequestId, nil, kv(m3, h3))
			}
			return ok(r.RequestId, h2[:], kv(m1, h1), kv(m2, h2))
		})
		var got [][32]byte
		n, err := client.QueryAll(t.Context(), ai, q, func(p Page) error {
			for _, m := range p.Messages {
				got = append(got, m.Hash)
			}
			return nil
		})
		if err != nil || n != 2 || !slices.Equal(got, [][32]byte{h1, h2, h3}) {
			t.Fatalf("%d pages %v, %v", n, got, err)
		}
		stop := errors.New("stop")
		if n, err := client.QueryAll(t.Context(), ai, q, func(Page) error { return stop }); n != 1 || !errors.Is(err, stop) {
			t.Fatalf("callback error: %d pages, %v", n, err)
		}
	})
}

// TestMessageStore: retention and capacity of the in-memory store, on a
// fake clock.
func TestMessageStore(t *testing.T) {
	clock := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	s := NewService(ServiceConfig{Retention: time.Hour, Capacity: 3})
	s.now = now
	msg := func(text string, age time.Duration) *wakuwire.Message {
		return &wakuwire.Message{Payload: []byte(text), ContentTopic: ctA, Timestamp: now().Add(-age).UnixNano()}
	}
	hashes := func() []string {
		resp := s.serve(marshal(t, &storepb.StoreQueryRequest{RequestId: "q", IncludeData: true, PaginationForward: true}))
		var out []string
		for _, kv := range resp.Messages {
			out = append(out, string(rpc.ToWire(kv.Message).Payload))
		}
		return out
	}
	m1, m2, m3 := msg("1", 10*time.Second), msg("2", 5*time.Second), msg("3", 0)
	for _, tc := range []struct {
		m    *wakuwire.Message
		want bool
	}{{m2, true}, {m1, true}, {m2, false}, {m3, true}} {
		if got := s.Add(shard32, tc.m); got != tc.want {
			t.Fatalf("add %q = %v", tc.m.Payload, got)
		}
	}
	if got := strings.Join(hashes(), ","); got != "1,2,3" {
		t.Fatalf("stored %s", got)
	}
	// Full: a message older than all kept ones is refused, a newer one
	// pushes out the oldest.
	if s.Add(shard32, msg("0", 15*time.Second)) {
		t.Fatal("message older than the store accepted at capacity")
	}
	if !s.Add(shard32, msg("4", -time.Second)) {
		t.Fatal("new message refused at capacity")
	}
	if got := strings.Join(hashes(), ","); got != "2,3,4" {
		t.Fatalf("after capacity eviction: %s", got)
	}
	if s.byHash[wakuwire.Hash(shard32, m1)] != nil {
		t.Fatal("evicted message still indexed")
	}
	// Retention: an hour later "2" and "3" expire first (by timestamp).
	advance(time.Hour - 2*time.Second)
	if got := strings.Join(hashes(), ","); got != "3,4" {
		t.Fatalf("after 1h-2s: %s", got)
	}
	advance(5 * time.Second)
	if got := strings.Join(hashes(), ","); got != "" || s.Len() != 0 || len(s.byHash) != 0 {
		t.Fatalf("after retention: %q, %d kept", got, s.Len())
	}
	// A cursor that expired is unknown.
	resp := s.serve(marshal(t, &storepb.StoreQueryRequest{RequestId: "q", PaginationCursor: func() []byte { h := wakuwire.Hash(shard32, m3); return h[:] }()}))
	if Status(resp.GetStatusCode()) != BadRequest || !strings.Contains(resp.GetStatusDesc(), "cursor not found") {
		t.Fatalf("expired cursor: %d %s", resp.GetStatusCode(), resp.GetStatusDesc())
	}
	// Eligibility: ephemeral and far-off timestamps are not stored.
	for _, m := range []*wakuwire.Message{
		{Payload: []byte("e"), ContentTopic: ctA, Timestamp: now().UnixNano(), Ephemeral: true},
		{Payload: []byte("old"), ContentTopic: ctA, Timestamp: now().Add(-21 * time.Second).UnixNano()},
		{Payload: []byte("new"), ContentTopic: ctA, Timestamp: now().Add(21 * time.Second).UnixNano()},
		{Payload: []byte("none"), ContentTopic: ctA},
	} {
		if s.Add(shard32, m) {
			t.Errorf("%q stored", m.Payload)
		}
	}
	var nilStore *Service
	if nilStore.Add(shard32, m3) {
		t.Fatal("nil store stored")
	}
}

// TestMessageStoreBytes: the byte budget drops the oldest messages to make
// room, refuses a message that would be the first to go or that alone is
// over the budget, and keeps the gauges and the eviction count.
func TestMessageStoreBytes(t *testing.T) {
	now := time.Now()
	metrics := NewMetrics()
	prometheus.NewRegistry().MustRegister(metrics.Collectors()...)
	msg := func(text string, size int, age time.Duration) *wakuwire.Message {
		return &wakuwire.Message{Payload: append([]byte(text), make([]byte, size)...), ContentTopic: ctA, Timestamp: now.Add(-age).UnixNano()}
	}
	cost := func(m *wakuwire.Message) int64 { return entryBytes(len(m.Marshal()), m.ContentTopic) }
	unit := cost(msg("1", 1000, 0))
	s := NewService(ServiceConfig{MaxBytes: 3*unit + unit/2, Metrics: metrics})
	s.now = func() time.Time { return now }
	kept := func() string {
		var out []string
		for _, e := range s.order {
			out = append(out, string(e.msg.Payload[:1]))
		}
		return strings.Join(out, ",")
	}
	for _, step := range []struct {
		name  string
		m     *wakuwire.Message
		added bool
		kept  string
	}{
		{"first", msg("1", 1000, 4*time.Second), true, "1"},
		{"second", msg("2", 1000, 3*time.Second), true, "1,2"},
		{"third", msg("3", 1000, 2*time.Second), true, "1,2,3"},
		{"a fourth pushes out the oldest", msg("4", 1000, time.Second), true, "2,3,4"},
		{"one older than all kept is refused", msg("0", 1000, 5*time.Second), false, "2,3,4"},
		{"one over the whole budget is refused", msg("9", int(4*unit), 0), false, "2,3,4"},
		{"a large new one pushes out two", msg("5", int(2*unit-unit/4), 0), true, "4,5"},
		{"an out-of-order one that fits", msg("6", 10, 1500*time.Millisecond), true, "6,4,5"},
	} {
		if got := s.Add(shard32, step.m); got != step.added {
			t.Fatalf("%s: add = %v", step.name, got)
		}
		var sum int64
		for _, e := range s.order {
			sum += e.cost
		}
		if got := kept(); got != step.kept || s.Size() != sum || sum > s.maxBytes {
			t.Fatalf("%s: kept %s (%d bytes counted, %d summed, budget %d), want %s", step.name, got, s.Size(), sum, s.maxBytes, step.kept)
		}
		if g, b := testutil.ToFloat64(metrics.Messages), testutil.ToFloat64(metrics.Bytes); g != float64(len(s.order)) || b != float64(sum) {
			t.Fatalf("%s: gauges %v messages, %v bytes", step.name, g, b)
		}
	}
	if n := testutil.ToFloat64(metrics.Evicted.WithLabelValues("bytes")); n != 3 {
		t.Fatalf("%v evicted for bytes, want 3", n)
	}
	if n := testutil.ToFloat64(metrics.Skipped.WithLabelValues(skipFull)); n != 2 {
		t.Fatalf("%v skipped as full, want 2", n)
	}
	if len(s.byHash) != len(s.order) {
		t.Fatalf("%d indexed, %d kept", len(s.byHash), len(s.order))
	}
}

// TestStoreServeSizeCap: a page of large messages stops short of the limit
// (with a cursor) so that its frame stays readable by js-waku (4 MiB), and
// following the cursors still yields every message once.
func TestStoreServeSizeCap(t *testing.T) {
	s := NewService(ServiceConfig{Retention: time.Hour, Capacity: 100})
	now := time.Now()
	var want [][32]byte
	for i := range 60 {
		m := &wakuwire.Message{Payload: bytes.Repeat([]byte{byte(i)}, 200<<10), ContentTopic: ctA, Timestamp: now.UnixNano() + int64(i)}
		if !s.Add(shard32, m) {
			t.Fatal("not stored")
		}
		want = append(want, wakuwire.Hash(shard32, m))
	}
	var got [][32]byte
	req := &storepb.StoreQueryRequest{RequestId: "q", IncludeData: true, PaginationForward: true, PaginationLimit: proto.Uint64(100)}
	for pages := 1; ; pages++ {
		b := s.serve(marshal(t, req))
		if size := proto.Size(b); size > 4<<20 || len(b.Messages) == 0 {
			t.Fatalf("page %d: %d messages in %d bytes", pages, len(b.Messages), size)
		}
		for _, kv := range b.Messages {
			got = append(got, [32]byte(kv.MessageHash))
		}
		if b.PaginationCursor == nil {
			if pages < 3 {
				t.Fatalf("%d pages of 200 KiB messages under a 4 MiB cap", pages)
			}
			break
		}
		if !bytes.Equal(b.PaginationCursor, b.Messages[len(b.Messages)-1].MessageHash) {
			t.Fatal("cursor is not the page's last message")
		}
		req.PaginationCursor = b.PaginationCursor
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %d messages, want the 60 in order", len(got))
	}
	// Hashes only: one page of all 60.
	if b := s.serve(marshal(t, &storepb.StoreQueryRequest{RequestId: "q", PaginationForward: true, PaginationLimit: proto.Uint64(100)})); len(b.Messages) != 60 || b.PaginationCursor != nil {
		t.Fatalf("hashes only: %d messages, cursor %x", len(b.Messages), b.PaginationCursor)
	}
}
