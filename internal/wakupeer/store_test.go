package wakupeer

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/wakuwire"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/encoding/protowire"
)

// Our Store v3 client against our own service. Neither is independent of
// the other (both follow our reading of RFC 13 and nwaku); the independent
// check is js-waku's store client against our service (store_jswaku_test.go).
// There is no third-party store server to test the client against (none on
// npm; nwaku is not run here): the lying servers below only check that the
// client refuses what it must.

const (
	ctA = "/archivefleet/1/store-a/proto"
	ctB = "/archivefleet/1/store-b/proto"
)

// stored is a message the test expects the store to hold.
type stored struct {
	hash  [32]byte
	topic string
	m     *wakuwire.Message
}

func sortStored(s []stored) {
	slices.SortFunc(s, func(a, b stored) int { return cmpStoreKey(a.m.Timestamp, a.hash, b.m.Timestamp, b.hash) })
}

func filterStored(all []stored, keep func(stored) bool) []stored {
	var out []stored
	for _, s := range all {
		if keep(s) {
			out = append(out, s)
		}
	}
	return out
}

// expectPages splits want (oldest first) into the pages a store returns:
// forward from the oldest, backward from the newest, each page oldest first.
func expectPages(want []stored, limit int, forward bool) [][][32]byte {
	var pages [][][32]byte
	n := len(want)
	for k := 0; k == 0 || k*limit < n; k++ {
		lo, hi := k*limit, min((k+1)*limit, n)
		if !forward {
			lo, hi = max(0, n-(k+1)*limit), n-k*limit
		}
		var page [][32]byte
		for _, s := range want[lo:hi] {
			page = append(page, s.hash)
		}
		pages = append(pages, page)
	}
	return pages
}

func short(h [32]byte) string { return hex.EncodeToString(h[:3]) }

func pagesString(pages [][][32]byte) string {
	var b strings.Builder
	for _, p := range pages {
		b.WriteString("[")
		for i, h := range p {
			if i > 0 {
				b.WriteString(" ")
			}
			b.WriteString(short(h))
		}
		b.WriteString("]")
	}
	return b.String()
}

// storeFixture: a store peer relaying shards 32 and 64 with a publisher
// peer meshed to it; both publish (the store keeps relayed messages and its
// own). all is what the store must hold, oldest first.
type storeFixture struct {
	server, client *Peer
	ai             peer.AddrInfo
	all            []stored
}

func newStoreFixture(t *testing.T) *storeFixture {
	t.Helper()
	server := startPeer(t, Config{StoreService: true, Shards: []uint16{32, 64}})
	pub := startPeer(t, Config{Shards: []uint16{32, 64}, StaticPeers: []string{tcpAddr(t, server)}})
	eventually(t, 10*time.Second, "publisher meshed with the store on both shards", func() bool {
		return server.MeshPeers(shard32) == 1 && server.MeshPeers(shard64) == 1 && pub.MeshPeers(shard32) == 1 && pub.MeshPeers(shard64) == 1
	})
	f := &storeFixture{server: server, client: startPeer(t, Config{Shards: []uint16{128}}),
		ai: peer.AddrInfo{ID: server.ID(), Addrs: server.Host().Addrs()}}

	base := time.Now().Add(-5*time.Second).UnixNano() / 1e6 * 1e6 // whole ms
	publish := func(from *Peer, topic, ct string, ts int64, text string) {
		m := &wakuwire.Message{Payload: []byte(text), ContentTopic: ct, Version: 1, Timestamp: ts}
		h, err := from.Publish(t.Context(), topic, m)
		if err != nil {
			t.Fatal(err)
		}
		f.all = append(f.all, stored{hash: h, topic: topic, m: m})
	}
	for i := range 130 {
		from := server
		if i%2 == 0 {
			from = pub // relayed to the store
		}
		publish(from, shard32, ctA, base+int64(i)*1e6, fmt.Sprintf("a%d", i))
		if i == 20 {
			// Same timestamp as a20: ordered by hash.
			publish(pub, shard32, ctA, base+int64(i)*1e6, "a20 twin")
		}
		if i%25 == 3 {
			publish(from, shard32, ctB, base+int64(i)*1e6+500, fmt.Sprintf("b%d", i))
			publish(from, shard64, ctA, base+int64(i)*1e6+700, fmt.Sprintf("c%d", i))
		}
		if i%10 == 9 {
			time.Sleep(5 * time.Millisecond) // pace the relay a little
		}
	}
	// Relayed but not stored: ephemeral. (Timestamps beyond 20 s from our
	// clock do not get this far: relay refuses them, TestValidatorClockGap;
	// the store's own check is in TestMessageStore.)
	if _, err := pub.Publish(t.Context(), shard32, &wakuwire.Message{Payload: []byte("ephemeral"), ContentTopic: ctA, Timestamp: base, Ephemeral: true}); err != nil {
		t.Fatal(err)
	}
	sortStored(f.all)
	// A marker published last: once stored, so is everything before it
	// (same relay path, in order).
	marker := &wakuwire.Message{Payload: []byte("marker"), ContentTopic: "/archivefleet/1/marker/proto", Timestamp: time.Now().UnixNano()}
	mh, err := pub.Publish(t.Context(), shard64, marker)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the store to hold every message", func() bool {
		server.store.mu.RLock()
		defer server.store.mu.RUnlock()
		return server.store.byHash[mh] != nil && len(server.store.order) >= len(f.all)+1
	})
	f.all = append(f.all, stored{hash: mh, topic: shard64, m: marker})
	if n := server.store.len(); n != len(f.all) {
		t.Fatalf("store holds %d messages, want %d", n, len(f.all))
	}
	return f
}

// queryAll runs q with StoreQueryAll and returns the pages' hashes and
// every message received.
func queryAll(t *testing.T, f *storeFixture, q StoreQuery) ([][][32]byte, []StoredMessage, error) {
	t.Helper()
	var pages [][][32]byte
	var msgs []StoredMessage
	n, err := f.client.StoreQueryAll(t.Context(), f.ai, q, func(p StorePage) error {
		var hs [][32]byte
		for _, m := range p.Messages {
			hs = append(hs, m.Hash)
		}
		pages = append(pages, hs)
		msgs = append(msgs, p.Messages...)
		return nil
	})
	if err == nil && n != len(pages) {
		t.Fatalf("StoreQueryAll returned %d pages, callback saw %d", n, len(pages))
	}
	return pages, msgs, err
}

func TestStoreService(t *testing.T) {
	t.Parallel()
	f := newStoreFixture(t)
	all := f.all
	on := func(topic string, cts ...string) func(stored) bool {
		return func(s stored) bool {
			return s.topic == topic && (len(cts) == 0 || slices.Contains(cts, s.m.ContentTopic))
		}
	}
	a32 := filterStored(all, on(shard32, ctA))
	if len(a32) != 131 {
		t.Fatalf("fixture: %d messages on shard 32 / ctA", len(a32))
	}
	ts := func(i int) int64 { return a32[i].m.Timestamp }

	for _, tc := range []struct {
		name  string
		q     StoreQuery
		want  []stored
		limit int // page size the store uses
	}{
		{"forward, pages of 25", StoreQuery{PubsubTopic: shard32, ContentTopics: []string{ctA}, Forward: true, Limit: 25, IncludeData: true}, a32, 25},
		{"backward, pages of 25", StoreQuery{PubsubTopic: shard32, ContentTopics: []string{ctA}, Limit: 25, IncludeData: true}, a32, 25},
		{"default page size 20", StoreQuery{PubsubTopic: shard32, ContentTopics: []string{ctA}, Forward: true, IncludeData: true}, a32, 20},
		{"limit above 100 lowered", StoreQuery{PubsubTopic: shard32, ContentTopics: []string{ctA}, Limit: 1000, IncludeData: true}, a32, 100},
		{"two content topics", StoreQuery{PubsubTopic: shard32, ContentTopics: []string{ctA, ctB}, Forward: true, Limit: 50, IncludeData: true},
			filterStored(all, on(shard32, ctA, ctB)), 50},
		{"pubsub topic only", StoreQuery{PubsubTopic: shard64, Forward: true, Limit: 3, IncludeData: true}, filterStored(all, on(shard64)), 3},
		{"no filter at all", StoreQuery{Forward: true, Limit: 100, IncludeData: true}, all, 100},
		{"unknown content topic", StoreQuery{PubsubTopic: shard32, ContentTopics: []string{"/x/1/y/proto"}, IncludeData: true}, nil, 20},
		{"pubsub topic not relayed", StoreQuery{PubsubTopic: wakuwire.ShardTopic(16, 1), IncludeData: true}, nil, 20},
		{"time range, both ends inclusive, forward", StoreQuery{PubsubTopic: shard32, ContentTopics: []string{ctA}, TimeStart: ts(10), TimeEnd: ts(22), Forward: true, Limit: 4, IncludeData: true},
			filterStored(a32, func(s stored) bool { return s.m.Timestamp >= ts(10) && s.m.Timestamp <= ts(22) }), 4},
		{"time range, backward", StoreQuery{PubsubTopic: shard32, ContentTopics: []string{ctA}, TimeStart: ts(10), TimeEnd: ts(22), Limit: 4, IncludeData: true},
			filterStored(a32, func(s stored) bool { return s.m.Timestamp >= ts(10) && s.m.Timestamp <= ts(22) }), 4},
		{"time range one ns inside both ends", StoreQuery{PubsubTopic: shard32, ContentTopics: []string{ctA}, TimeStart: ts(10) + 1, TimeEnd: ts(22) - 1, Forward: true, IncludeData: true},
			filterStored(a32, func(s stored) bool { return s.m.Timestamp > ts(10) && s.m.Timestamp < ts(22) }), 20},
		{"start only", StoreQuery{PubsubTopic: shard32, ContentTopics: []string{ctA}, TimeStart: ts(120), Forward: true, IncludeData: true}, a32[120:], 20},
		{"end only, backward", StoreQuery{PubsubTopic: shard32, ContentTopics: []string{ctA}, TimeEnd: ts(5), IncludeData: true}, a32[:6], 20},
		{"hashes only", StoreQuery{PubsubTopic: shard32, ContentTopics: []string{ctA}, Forward: true, Limit: 60}, a32, 60},
		{"hash lookup", StoreQuery{Hashes: [][32]byte{a32[7].hash, all[len(all)-1].hash, {1, 2, 3}, a32[3].hash, a32[7].hash}, Forward: true, IncludeData: true},
			[]stored{a32[3], a32[7], all[len(all)-1]}, 20},
		{"hash lookup, paged backward, no data", StoreQuery{Hashes: [][32]byte{a32[1].hash, a32[2].hash, a32[3].hash}, Limit: 2},
			[]stored{a32[1], a32[2], a32[3]}, 2},
		{"forward from a cursor", StoreQuery{PubsubTopic: shard32, ContentTopics: []string{ctA}, Cursor: a32[99].hash[:], Forward: true, Limit: 10, IncludeData: true}, a32[100:], 10},
		{"backward from a cursor", StoreQuery{PubsubTopic: shard32, ContentTopics: []string{ctA}, Cursor: a32[30].hash[:], Limit: 10, IncludeData: true}, a32[:30], 10},
		{"cursor on another content topic", StoreQuery{PubsubTopic: shard32, ContentTopics: []string{ctB}, Cursor: a32[60].hash[:], Forward: true, IncludeData: true},
			filterStored(all, func(s stored) bool { return on(shard32, ctB)(s) && s.m.Timestamp > ts(60) }), 20},
		{"cursor at the end: empty page", StoreQuery{PubsubTopic: shard32, ContentTopics: []string{ctA}, Cursor: a32[130].hash[:], Forward: true, IncludeData: true}, nil, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pages, msgs, err := queryAll(t, f, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			want := expectPages(tc.want, tc.limit, tc.q.Forward)
			if got := pagesString(pages); got != pagesString(want) {
				t.Fatalf("pages\n got %s\nwant %s", got, pagesString(want))
			}
			byHash := map[[32]byte]stored{}
			for _, s := range all {
				byHash[s.hash] = s
			}
			for _, m := range msgs {
				s := byHash[m.Hash]
				if !tc.q.IncludeData {
					if m.Message != nil || m.PubsubTopic != "" {
						t.Fatalf("%x: data without include_data", m.Hash)
					}
					continue
				}
				if m.Message == nil || m.PubsubTopic != s.topic || !bytes.Equal(m.Message.Marshal(), s.m.Marshal()) {
					t.Fatalf("%x: got %q on %s, want %q on %s", m.Hash, m.Message.Payload, m.PubsubTopic, s.m.Payload, s.topic)
				}
			}
		})
	}

	t.Run("unknown cursor", func(t *testing.T) {
		var serr *StoreError
		_, err := f.client.StoreQuery(t.Context(), f.ai, StoreQuery{PubsubTopic: shard32, Cursor: bytes.Repeat([]byte{7}, 32)})
		if !errors.As(err, &serr) || serr.Code != StoreBadRequest || !strings.Contains(serr.Desc, "cursor not found") || serr.IsRetryable() {
			t.Fatalf("err = %v, want status 400 cursor not found", err)
		}
	})

	t.Run("queries the client refuses", func(t *testing.T) {
		eleven := make([]string, 11)
		for i := range eleven {
			eleven[i] = fmt.Sprintf("/x/1/t%d/proto", i)
		}
		for _, q := range []StoreQuery{
			{ContentTopics: []string{ctA}},
			{PubsubTopic: shard32, ContentTopics: eleven},
			{PubsubTopic: shard32, ContentTopics: []string{""}},
			{Hashes: [][32]byte{{1}}, PubsubTopic: shard32},
			{Hashes: [][32]byte{{1}}, TimeStart: 5},
			{TimeStart: 10, TimeEnd: 9},
			{Cursor: []byte{1, 2, 3}},
		} {
			if _, err := f.client.StoreQuery(t.Context(), f.ai, q); !errors.Is(err, ErrStoreQuery) {
				t.Errorf("%+v: err = %v, want ErrStoreQuery", q, err)
			}
		}
	})

	t.Run("raw requests", func(t *testing.T) {
		cursor := a32[50].hash[:]
		eleven := make([]string, 11)
		for i := range eleven {
			eleven[i] = ctA
		}
		for _, tc := range []struct {
			name string
			req  []byte
			code uint32
			desc string
			n    int // messages, for 200
			cur  bool
		}{
			{"not protobuf", []byte{0xff, 0xff, 0xff}, 400, "decoding", 0, false},
			{"no request id", (&storeRequest{PubsubTopic: shard32}).marshal(), 400, "request_id", 0, false},
			{"wrong wire type", append((&storeRequest{RequestID: "w"}).marshal(), 0x55, 0x00), 400, "wire type", 0, false},
			{"content topics without pubsub topic", (&storeRequest{RequestID: "x", ContentTopics: []string{ctA}}).marshal(), 400, "pubsub topic", 0, false},
			{"hashes with a pubsub topic", (&storeRequest{RequestID: "x", PubsubTopic: shard32, Hashes: [][]byte{cursor}}).marshal(), 400, "hash lookup", 0, false},
			{"hashes with a time range", (&storeRequest{RequestID: "x", HasTimeEnd: true, TimeEnd: 5, Hashes: [][]byte{cursor}}).marshal(), 400, "hash lookup", 0, false},
			{"short hash", (&storeRequest{RequestID: "x", Hashes: [][]byte{cursor[:31]}}).marshal(), 400, "32 bytes", 0, false},
			{"short cursor", (&storeRequest{RequestID: "x", HasCursor: true, Cursor: cursor[:31]}).marshal(), 400, "cursor hash length", 0, false},
			{"zero cursor", (&storeRequest{RequestID: "x", HasCursor: true, Cursor: make([]byte, 32)}).marshal(), 400, "all zeroes", 0, false},
			{"eleven content topics", (&storeRequest{RequestID: "x", PubsubTopic: shard32, ContentTopics: eleven}).marshal(), 400, "too many content topics", 0, false},
			{"limit 1000 served as 100", (&storeRequest{RequestID: "x", PubsubTopic: shard32, HasLimit: true, Limit: 1000}).marshal(), 200, "OK", 100, true},
			{"limit 0 served as 20", (&storeRequest{RequestID: "x", PubsubTopic: shard32, HasLimit: true, Limit: 0}).marshal(), 200, "OK", 20, true},
			{"no limit served as 20", (&storeRequest{RequestID: "x", PubsubTopic: shard32}).marshal(), 200, "OK", 20, true},
			{"empty pubsub topic is unset", append((&storeRequest{RequestID: "x", HasLimit: true, Limit: 100}).marshal(), 0x52, 0x00), 200, "OK", 100, true},
			{"cursor, no data", (&storeRequest{RequestID: "x", HasCursor: true, Cursor: cursor, Forward: true, HasLimit: true, Limit: 10}).marshal(), 200, "OK", 10, true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp := rawStore(t, f.client, f.server.ID(), frame(tc.req))
				if !resp.HasStatus || resp.StatusCode != tc.code || !strings.Contains(resp.Desc, tc.desc) ||
					len(resp.Messages) != tc.n || resp.HasCursor != tc.cur {
					t.Fatalf("status %d %q, %d messages, cursor %v; want %d %q, %d messages, cursor %v",
						resp.StatusCode, resp.Desc, len(resp.Messages), resp.HasCursor, tc.code, tc.desc, tc.n, tc.cur)
				}
				if tc.code == 200 && resp.RequestID != "x" {
					t.Fatalf("request id %q", resp.RequestID)
				}
				for _, kv := range resp.Messages {
					if kv.HasMessage || kv.HasTopic {
						t.Fatal("data without include_data")
					}
				}
			})
		}
		// Only the length prefix of a request over the limit: answered
		// with 400 before the rest is read.
		resp := rawStore(t, f.client, f.server.ID(), protowire.AppendVarint(nil, maxStoreRequest+1))
		if resp.StatusCode != StoreBadRequest || !strings.Contains(resp.Desc, "too large") {
			t.Fatalf("request over the limit: %d %q", resp.StatusCode, resp.Desc)
		}
	})
}

// rawStore writes wire (a framed request) to the store of to and returns
// the decoded response.
func rawStore(t *testing.T, from *Peer, to peer.ID, wire []byte) storeResponse {
	t.Helper()
	s, err := from.Host().NewStream(t.Context(), to, StoreProtocol)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := s.Write(wire); err != nil {
		t.Fatal(err)
	}
	_ = s.CloseWrite()
	b, err := readFrameGrowing(bufio.NewReader(s), maxStoreResponse(MaxStorePageSize))
	if err != nil {
		t.Fatal(err)
	}
	var resp storeResponse
	if err := resp.unmarshal(b); err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestStoreCodec(t *testing.T) {
	cursor := bytes.Repeat([]byte{0x11}, 32)
	req := storeRequest{RequestID: "r", IncludeData: true, PubsubTopic: "/p", ContentTopics: []string{"a", "b"},
		TimeStart: 1, HasTimeStart: true, TimeEnd: -1, HasTimeEnd: true, Hashes: [][]byte{{0xaa}},
		Cursor: cursor, HasCursor: true, Forward: true, Limit: 50, HasLimit: true}
	// Tags as @waku/proto 0.0.8 store_v3.js writes them (w.uint32(10), 16,
	// 82, 90, 96, 104, 162, 410, 416, 424), sint64 zigzag.
	want := "0a0172" + "1001" + "52022f70" + "5a0161" + "5a0162" + "6002" + "6801" + "a20101aa" +
		"9a0320" + strings.Repeat("11", 32) + "a00301" + "a80332"
	if got := hex.EncodeToString(req.marshal()); got != want {
		t.Fatalf("request\n got %s\nwant %s", got, want)
	}
	var back storeRequest
	if err := back.unmarshal(req.marshal()); err != nil {
		t.Fatal(err)
	}
	back.sawWrongLength = false
	if fmt.Sprint(back) != fmt.Sprint(req) {
		t.Fatalf("round trip\n got %+v\nwant %+v", back, req)
	}

	// A response as nwaku's rpc_codec.nim writes it.
	m := &wakuwire.Message{Payload: []byte("hi"), ContentTopic: "/a/1/b/proto", Timestamp: 5}
	h := wakuwire.Hash("/p", m)
	kv := append(append([]byte{0x0a, 0x20}, h[:]...), 0x12, byte(len(m.Marshal())))
	kv = append(append(kv, m.Marshal()...), 0x1a, 0x02, '/', 'p')
	wire := append([]byte{0x0a, 0x01, 'r', 0x50, 0xc8, 0x01, 0x5a, 0x02, 'O', 'K', 0xa2, 0x01, byte(len(kv))}, kv...)
	wire = append(append(wire, 0x9a, 0x03, 0x20), h[:]...)
	wire = append(wire, 0xf8, 0x07, 0x01) // unknown field 127, skipped
	var resp storeResponse
	if err := resp.unmarshal(wire); err != nil {
		t.Fatal(err)
	}
	if resp.RequestID != "r" || resp.StatusCode != 200 || !resp.HasStatus || resp.Desc != "OK" || len(resp.Messages) != 1 ||
		!bytes.Equal(resp.Messages[0].Hash, h[:]) || !bytes.Equal(resp.Messages[0].Message, m.Marshal()) ||
		resp.Messages[0].PubsubTopic != "/p" || !bytes.Equal(resp.Cursor, h[:]) {
		t.Fatalf("decoded %+v", resp)
	}
	// Our encoder writes the same bytes (field order as nwaku's).
	if got := resp.marshal(); !bytes.Equal(got, wire[:len(wire)-3]) {
		t.Fatalf("response\n got %x\nwant %x", got, wire[:len(wire)-3])
	}
	for _, bad := range [][]byte{{0x50}, {0x0a, 0x05, 'x'}, {0x52, 0x01, 0x01}, {0xa2, 0x01, 0x02, 0x12, 0x00}} {
		if err := resp.unmarshal(bad); err == nil {
			t.Errorf("%x accepted", bad)
		}
	}
}

func TestStoreErrorRetryable(t *testing.T) {
	for code, want := range map[uint32]bool{300: false, 400: false, 429: true, 500: true, 503: true, 504: true} {
		if got := (&StoreError{Code: code}).IsRetryable(); got != want {
			t.Errorf("IsRetryable(%d) = %v", code, got)
		}
	}
}

// lyingStore is a store node that answers with whatever respond builds for
// the decoded request.
func lyingStore(t *testing.T, respond func(req storeRequest) []byte) (*Peer, peer.AddrInfo) {
	t.Helper()
	srv := startPeer(t, Config{})
	srv.Host().SetStreamHandler(StoreProtocol, func(s network.Stream) {
		defer s.Close()
		b, err := readFrame(bufio.NewReader(s), maxStoreRequest)
		var req storeRequest
		if err == nil {
			err = req.unmarshal(b)
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
	return srv, peer.AddrInfo{ID: srv.ID(), Addrs: srv.Host().Addrs()}
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
	kv := func(m *wakuwire.Message, h [32]byte) storeKeyValue {
		return storeKeyValue{Hash: h[:], Message: m.Marshal(), HasMessage: true, PubsubTopic: shard32, HasTopic: true}
	}
	ok := func(id string, cursor []byte, kvs ...storeKeyValue) []byte {
		r := storeResponse{RequestID: id, StatusCode: 200, HasStatus: true, Desc: "OK", Messages: kvs, Cursor: cursor, HasCursor: cursor != nil}
		return frame(r.marshal())
	}
	client := startPeer(t, Config{Shards: []uint16{128}})
	q := StoreQuery{PubsubTopic: shard32, ContentTopics: []string{ctA}, Forward: true, IncludeData: true, Limit: 2}

	for _, tc := range []struct {
		name    string
		respond func(storeRequest) []byte
		q       *StoreQuery
		want    string // in the ErrStoreResponse
		code    uint32 // or a StoreError
	}{
		{name: "message under another message's hash", want: "hashes to", respond: func(r storeRequest) []byte {
			lie := kv(m1, h1)
			lie.Message = m2.Marshal()
			return ok(r.RequestID, nil, lie)
		}},
		{name: "message under another pubsub topic", want: "hashes to", respond: func(r storeRequest) []byte {
			lie := kv(m1, h1)
			lie.PubsubTopic = shard64
			return ok(r.RequestID, nil, lie)
		}},
		{name: "honest hash, another content topic", want: "content topic", respond: func(r storeRequest) []byte {
			m := &wakuwire.Message{Payload: []byte("x"), ContentTopic: ctB, Timestamp: now}
			return ok(r.RequestID, nil, kv(m, wakuwire.Hash(shard32, m)))
		}},
		{name: "honest hash, another pubsub topic", want: "pubsub topic", respond: func(r storeRequest) []byte {
			lie := storeKeyValue{Hash: func() []byte { h := wakuwire.Hash(shard64, m1); return h[:] }(), Message: m1.Marshal(), HasMessage: true, PubsubTopic: shard64, HasTopic: true}
			return ok(r.RequestID, nil, lie)
		}},
		{name: "outside the time range", q: &StoreQuery{PubsubTopic: shard32, TimeEnd: now - 1, IncludeData: true}, want: "time range", respond: func(r storeRequest) []byte {
			return ok(r.RequestID, nil, kv(m1, h1))
		}},
		{name: "not looked up", q: &StoreQuery{Hashes: [][32]byte{h2}, IncludeData: true}, want: "not looked up", respond: func(r storeRequest) []byte {
			return ok(r.RequestID, nil, kv(m1, h1))
		}},
		{name: "newest first", want: "not after", respond: func(r storeRequest) []byte {
			return ok(r.RequestID, nil, kv(m2, h2), kv(m1, h1))
		}},
		{name: "more than the limit", want: "limit", respond: func(r storeRequest) []byte {
			return ok(r.RequestID, nil, kv(m1, h1), kv(m2, h2), kv(m3, h3))
		}},
		{name: "no data although asked", want: "no data", respond: func(r storeRequest) []byte {
			return ok(r.RequestID, nil, storeKeyValue{Hash: h1[:]})
		}},
		{name: "message without topic", want: "together", respond: func(r storeRequest) []byte {
			lie := kv(m1, h1)
			lie.HasTopic, lie.PubsubTopic = false, ""
			return ok(r.RequestID, nil, lie)
		}},
		{name: "cursor not the last message", want: "cursor", respond: func(r storeRequest) []byte {
			return ok(r.RequestID, h1[:], kv(m1, h1), kv(m2, h2))
		}},
		{name: "cursor on an empty page", want: "empty page", respond: func(r storeRequest) []byte {
			return ok(r.RequestID, h1[:])
		}},
		{name: "same page again, same cursor", want: "asked with", respond: func(r storeRequest) []byte {
			return ok(r.RequestID, h2[:], kv(m1, h1), kv(m2, h2))
		}},
		{name: "two pages in a circle", want: "repeated", respond: func(r storeRequest) []byte {
			if bytes.Equal(r.Cursor, h2[:]) {
				return ok(r.RequestID, h3[:], kv(m3, h3))
			}
			return ok(r.RequestID, h2[:], kv(m1, h1), kv(m2, h2))
		}},
		{name: "wrong request id", want: "request id", respond: func(r storeRequest) []byte { return ok("not-"+r.RequestID, nil) }},
		{name: "no status", want: "no status", respond: func(r storeRequest) []byte {
			return frame(protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), r.RequestID))
		}},
		{name: "garbage", want: "bad store response", respond: func(storeRequest) []byte { return frame([]byte{0x0a, 0xff, 0xff}) }},
		{name: "frame over the cap", want: "frame too large", respond: func(storeRequest) []byte {
			return protowire.AppendVarint(nil, maxStoreResponse(2)+1)
		}},
		{name: "closed without answer", want: "stream ended", respond: func(storeRequest) []byte { return nil }},
		{name: "rate limited, request id N/A", code: 429, respond: func(storeRequest) []byte {
			return frame((&storeResponse{RequestID: "N/A", StatusCode: 429, Desc: "TOO_MANY_REQUESTS"}).marshal())
		}},
		{name: "nwaku's 300 with no request id", code: 300, respond: func(storeRequest) []byte {
			return frame((&storeResponse{StatusCode: 300, Desc: "BAD_RESPONSE: archive error: DRIVER_ERROR: cursor not found"}).marshal())
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ai := lyingStore(t, tc.respond)
			qq := q
			if tc.q != nil {
				qq = *tc.q
			}
			_, err := client.StoreQueryAll(t.Context(), ai, qq, func(StorePage) error { return nil })
			if tc.code != 0 {
				var serr *StoreError
				if !errors.As(err, &serr) || serr.Code != tc.code || serr.Desc == "" {
					t.Fatalf("err = %v, want StoreError %d", err, tc.code)
				}
				return
			}
			if !errors.Is(err, ErrStoreResponse) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrStoreResponse with %q", err, tc.want)
			}
		})
	}

	t.Run("an honest page is accepted", func(t *testing.T) {
		_, ai := lyingStore(t, func(r storeRequest) []byte {
			if r.HasCursor {
				return ok(r.RequestID, nil, kv(m3, h3))
			}
			return ok(r.RequestID, h2[:], kv(m1, h1), kv(m2, h2))
		})
		var got [][32]byte
		n, err := client.StoreQueryAll(t.Context(), ai, q, func(p StorePage) error {
			for _, m := range p.Messages {
				got = append(got, m.Hash)
			}
			return nil
		})
		if err != nil || n != 2 || !slices.Equal(got, [][32]byte{h1, h2, h3}) {
			t.Fatalf("%d pages %v, %v", n, got, err)
		}
		stop := errors.New("stop")
		if n, err := client.StoreQueryAll(t.Context(), ai, q, func(StorePage) error { return stop }); n != 1 || !errors.Is(err, stop) {
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
	s := newMessageStore(Config{StoreService: true, StoreRetention: time.Hour, StoreCapacity: 3}.withDefaults(), nil)
	s.now = now
	msg := func(text string, age time.Duration) *wakuwire.Message {
		return &wakuwire.Message{Payload: []byte(text), ContentTopic: ctA, Timestamp: now().Add(-age).UnixNano()}
	}
	hashes := func() []string {
		resp := s.serve((&storeRequest{RequestID: "q", IncludeData: true, Forward: true}).marshal())
		var out []string
		for _, kv := range resp.Messages {
			var m wakuwire.Message
			if err := m.Unmarshal(kv.Message); err != nil {
				t.Fatal(err)
			}
			out = append(out, string(m.Payload))
		}
		return out
	}
	m1, m2, m3 := msg("1", 10*time.Second), msg("2", 5*time.Second), msg("3", 0)
	for _, tc := range []struct {
		m    *wakuwire.Message
		want bool
	}{{m2, true}, {m1, true}, {m2, false}, {m3, true}} {
		if got := s.add(shard32, tc.m); got != tc.want {
			t.Fatalf("add %q = %v", tc.m.Payload, got)
		}
	}
	if got := strings.Join(hashes(), ","); got != "1,2,3" {
		t.Fatalf("stored %s", got)
	}
	// Full: a message older than all kept ones is refused, a newer one
	// pushes out the oldest.
	if s.add(shard32, msg("0", 15*time.Second)) {
		t.Fatal("message older than the store accepted at capacity")
	}
	if !s.add(shard32, msg("4", -time.Second)) {
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
	if got := strings.Join(hashes(), ","); got != "" || s.len() != 0 || len(s.byHash) != 0 {
		t.Fatalf("after retention: %q, %d kept", got, s.len())
	}
	// A cursor that expired is unknown.
	resp := s.serve((&storeRequest{RequestID: "q", HasCursor: true, Cursor: func() []byte { h := wakuwire.Hash(shard32, m3); return h[:] }()}).marshal())
	if resp.StatusCode != StoreBadRequest || !strings.Contains(resp.Desc, "cursor not found") {
		t.Fatalf("expired cursor: %d %s", resp.StatusCode, resp.Desc)
	}
	// Eligibility: ephemeral and far-off timestamps are not stored.
	for _, m := range []*wakuwire.Message{
		{Payload: []byte("e"), ContentTopic: ctA, Timestamp: now().UnixNano(), Ephemeral: true},
		{Payload: []byte("old"), ContentTopic: ctA, Timestamp: now().Add(-21 * time.Second).UnixNano()},
		{Payload: []byte("new"), ContentTopic: ctA, Timestamp: now().Add(21 * time.Second).UnixNano()},
		{Payload: []byte("none"), ContentTopic: ctA},
	} {
		if s.add(shard32, m) {
			t.Errorf("%q stored", m.Payload)
		}
	}
	var nilStore *messageStore
	if nilStore.add(shard32, m3) {
		t.Fatal("nil store stored")
	}
}

// TestMessageStoreBytes: the byte budget drops the oldest messages to make
// room, refuses a message that would be the first to go or that alone is
// over the budget, and keeps the gauges and the eviction count.
func TestMessageStoreBytes(t *testing.T) {
	now := time.Now()
	metrics, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	msg := func(text string, size int, age time.Duration) *wakuwire.Message {
		return &wakuwire.Message{Payload: append([]byte(text), make([]byte, size)...), ContentTopic: ctA, Timestamp: now.Add(-age).UnixNano()}
	}
	cost := func(m *wakuwire.Message) int64 { return storeEntryBytes(m.Marshal(), m.ContentTopic) }
	unit := cost(msg("1", 1000, 0))
	s := newMessageStore(Config{StoreService: true, StoreMaxBytes: 3*unit + unit/2}.withDefaults(), metrics)
	s.now = func() time.Time { return now }
	kept := func() string {
		var out []string
		for _, e := range s.order {
			var m wakuwire.Message
			if err := m.Unmarshal(e.raw); err != nil {
				t.Fatal(err)
			}
			out = append(out, string(m.Payload[:1]))
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
		if got := s.add(shard32, step.m); got != step.added {
			t.Fatalf("%s: add = %v", step.name, got)
		}
		var sum int64
		for _, e := range s.order {
			sum += e.cost
		}
		if got := kept(); got != step.kept || s.size() != sum || sum > s.maxBytes {
			t.Fatalf("%s: kept %s (%d bytes counted, %d summed, budget %d), want %s", step.name, got, s.size(), sum, s.maxBytes, step.kept)
		}
		if g, b := testutil.ToFloat64(metrics.StoreMessages), testutil.ToFloat64(metrics.StoreBytes); g != float64(len(s.order)) || b != float64(sum) {
			t.Fatalf("%s: gauges %v messages, %v bytes", step.name, g, b)
		}
	}
	if n := testutil.ToFloat64(metrics.StoreEvicted.WithLabelValues("bytes")); n != 3 {
		t.Fatalf("%v evicted for bytes, want 3", n)
	}
	if n := testutil.ToFloat64(metrics.StoreSkipped.WithLabelValues(skipFull)); n != 2 {
		t.Fatalf("%v skipped as full, want 2", n)
	}
	if len(s.byHash) != len(s.order) {
		t.Fatalf("%d indexed, %d kept", len(s.byHash), len(s.order))
	}
}

// TestStoreEviction: the same bounds on a running peer, end to end.
func TestStoreEviction(t *testing.T) {
	t.Parallel()
	t.Run("capacity", func(t *testing.T) {
		t.Parallel()
		p := startPeer(t, Config{StoreService: true, StoreCapacity: 5})
		base := time.Now().UnixNano()
		var hs [][32]byte
		for i := range 8 {
			h, err := p.Publish(t.Context(), shard32, &wakuwire.Message{Payload: []byte{byte(i)}, ContentTopic: ctA, Timestamp: base + int64(i)})
			if err != nil {
				t.Fatal(err)
			}
			hs = append(hs, h)
		}
		eventually(t, 5*time.Second, "the last message stored", func() bool {
			p.store.mu.RLock()
			defer p.store.mu.RUnlock()
			return p.store.byHash[hs[7]] != nil
		})
		page, err := startPeer(t, Config{}).StoreQuery(t.Context(), peer.AddrInfo{ID: p.ID(), Addrs: p.Host().Addrs()}, StoreQuery{Forward: true})
		if err != nil {
			t.Fatal(err)
		}
		var got [][32]byte
		for _, m := range page.Messages {
			got = append(got, m.Hash)
		}
		if !slices.Equal(got, hs[3:]) || page.Cursor != nil {
			t.Fatalf("kept %v, want the newest five", got)
		}
	})
	t.Run("bytes", func(t *testing.T) {
		t.Parallel()
		const size, budget = 100 << 10, 550 << 10
		reg := prometheus.NewRegistry()
		p := startPeer(t, Config{StoreService: true, StoreMaxBytes: budget, Registerer: reg})
		base := time.Now().UnixNano()
		var hs [][32]byte
		for i := range 10 {
			h, err := p.Publish(t.Context(), shard32, &wakuwire.Message{Payload: bytes.Repeat([]byte{byte(i)}, size), ContentTopic: ctA, Timestamp: base + int64(i)})
			if err != nil {
				t.Fatal(err)
			}
			hs = append(hs, h)
		}
		eventually(t, 5*time.Second, "the last message stored", func() bool {
			p.store.mu.RLock()
			defer p.store.mu.RUnlock()
			return p.store.byHash[hs[9]] != nil
		})
		page, err := startPeer(t, Config{}).StoreQuery(t.Context(), peer.AddrInfo{ID: p.ID(), Addrs: p.Host().Addrs()}, StoreQuery{Forward: true})
		if err != nil {
			t.Fatal(err)
		}
		var got [][32]byte
		for _, m := range page.Messages {
			got = append(got, m.Hash)
		}
		if !slices.Equal(got, hs[5:]) {
			t.Fatalf("kept %d messages, want the newest five (each 100 KiB, budget 550 KiB)", len(got))
		}
		if b := testutil.ToFloat64(p.metrics.StoreBytes); b > budget || b != float64(p.store.size()) {
			t.Fatalf("waku_store_bytes %v, store %d, budget %d", b, p.store.size(), budget)
		}
	})
	t.Run("retention", func(t *testing.T) {
		t.Parallel()
		p := startPeer(t, Config{StoreService: true, StoreRetention: 2 * time.Second})
		client := startPeer(t, Config{})
		ai := peer.AddrInfo{ID: p.ID(), Addrs: p.Host().Addrs()}
		old, err := p.Publish(t.Context(), shard32, &wakuwire.Message{Payload: []byte("old"), ContentTopic: ctA, Timestamp: time.Now().Add(-1500 * time.Millisecond).UnixNano()})
		if err != nil {
			t.Fatal(err)
		}
		fresh, err := p.Publish(t.Context(), shard32, &wakuwire.Message{Payload: []byte("fresh"), ContentTopic: ctA, Timestamp: time.Now().UnixNano()})
		if err != nil {
			t.Fatal(err)
		}
		kept := func() [][32]byte {
			page, err := client.StoreQuery(t.Context(), ai, StoreQuery{PubsubTopic: shard32, Forward: true})
			if err != nil {
				t.Fatal(err)
			}
			var out [][32]byte
			for _, m := range page.Messages {
				out = append(out, m.Hash)
			}
			return out
		}
		eventually(t, 5*time.Second, "both stored, or the old one already expired", func() bool {
			k := kept()
			return slices.Equal(k, [][32]byte{old, fresh}) || slices.Equal(k, [][32]byte{fresh})
		})
		eventually(t, 5*time.Second, "the old message to expire", func() bool { return slices.Equal(kept(), [][32]byte{fresh}) })
		eventually(t, 5*time.Second, "the fresh one too", func() bool { return len(kept()) == 0 })
	})
}

func TestStoreConfig(t *testing.T) {
	d := Config{}.withDefaults()
	if d.StoreService || d.StoreRetention != 30*24*time.Hour || d.StoreCapacity != 1_000_000 || d.StoreMaxBytes != 256<<20 {
		t.Fatalf("store defaults %v %v %v %v", d.StoreService, d.StoreRetention, d.StoreCapacity, d.StoreMaxBytes)
	}
	for _, c := range []Config{{StoreCapacity: -1}, {StoreMaxBytes: -1}, {StoreRetention: -time.Second}} {
		if _, err := c.withDefaults().validate(); err == nil {
			t.Fatalf("%+v accepted", c)
		}
	}
	// Without StoreService the protocol is not served.
	p := startPeer(t, Config{})
	c := startPeer(t, Config{})
	if _, err := c.StoreQuery(t.Context(), peer.AddrInfo{ID: p.ID(), Addrs: p.Host().Addrs()}, StoreQuery{}); err == nil || errors.Is(err, ErrStoreResponse) {
		t.Fatalf("query of a peer without store: %v", err)
	}
}

// TestStoreServeSizeCap: a page of large messages stops short of the limit
// (with a cursor) so that its frame stays readable by js-waku (4 MiB), and
// following the cursors still yields every message once.
func TestStoreServeSizeCap(t *testing.T) {
	s := newMessageStore(Config{StoreService: true, StoreRetention: time.Hour, StoreCapacity: 100}.withDefaults(), nil)
	now := time.Now()
	var want [][32]byte
	for i := range 60 {
		m := &wakuwire.Message{Payload: bytes.Repeat([]byte{byte(i)}, 200<<10), ContentTopic: ctA, Timestamp: now.UnixNano() + int64(i)}
		if !s.add(shard32, m) {
			t.Fatal("not stored")
		}
		want = append(want, wakuwire.Hash(shard32, m))
	}
	var got [][32]byte
	req := storeRequest{RequestID: "q", IncludeData: true, Forward: true, HasLimit: true, Limit: 100}
	for pages := 1; ; pages++ {
		b := s.serve(req.marshal())
		if size := len(b.marshal()); size > 4<<20 || len(b.Messages) == 0 {
			t.Fatalf("page %d: %d messages in %d bytes", pages, len(b.Messages), size)
		}
		for _, kv := range b.Messages {
			got = append(got, [32]byte(kv.Hash))
		}
		if !b.HasCursor {
			if pages < 3 {
				t.Fatalf("%d pages of 200 KiB messages under a 4 MiB cap", pages)
			}
			break
		}
		if !bytes.Equal(b.Cursor, b.Messages[len(b.Messages)-1].Hash) {
			t.Fatal("cursor is not the page's last message")
		}
		req.Cursor, req.HasCursor = b.Cursor, true
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %d messages, want the 60 in order", len(got))
	}
	// Hashes only: one page of all 60.
	if b := s.serve((&storeRequest{RequestID: "q", Forward: true, HasLimit: true, Limit: 100}).marshal()); len(b.Messages) != 60 || b.HasCursor {
		t.Fatalf("hashes only: %d messages, cursor %v", len(b.Messages), b.HasCursor)
	}
}
