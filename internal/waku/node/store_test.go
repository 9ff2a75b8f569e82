package node

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/testenv"
	"github.com/archivefleet/archivefleet/internal/waku/rpc"
	"github.com/archivefleet/archivefleet/internal/waku/store"
	"github.com/archivefleet/archivefleet/internal/waku/store/storepb"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Our Store v3 client against our own service, fed by relay. Neither is
// independent of the other (both follow our reading of RFC 13 and nwaku);
// the independent check is js-waku's store client against our service
// (store_jswaku_test.go). There is no third-party store server to test the
// client against (none on npm; nwaku is not run here): the lying servers of
// internal/waku/store only check that the client refuses what it must.

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
	slices.SortFunc(s, func(a, b stored) int { return store.CompareKeys(a.m.Timestamp, a.hash, b.m.Timestamp, b.hash) })
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
	server, client *Node
	ai             peer.AddrInfo
	all            []stored
}

func newStoreFixture(t *testing.T) *storeFixture {
	t.Helper()
	server := startPeer(t, Config{StoreService: true, Shards: []uint16{32, 64}})
	pub := startPeer(t, Config{Shards: []uint16{32, 64}, StaticPeers: []string{tcpAddr(t, server)}})
	testenv.Eventually(t, 10*time.Second, func() bool {
		return server.MeshPeers(shard32) == 1 && server.MeshPeers(shard64) == 1 && pub.MeshPeers(shard32) == 1 && pub.MeshPeers(shard64) == 1
	}, "publisher meshed with the store on both shards")

	f := &storeFixture{server: server, client: startPeer(t, Config{Shards: []uint16{128}}),
		ai: peer.AddrInfo{ID: server.ID(), Addrs: server.Host().Addrs()}}

	base := time.Now().Add(-5*time.Second).UnixNano() / 1e6 * 1e6 // whole ms
	publish := func(from *Node, topic, ct string, ts int64, text string) {
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
	testenv.Eventually(t, 10*time.Second, func() bool {
		return server.store.Has(mh) && server.store.Len() >= len(f.all)+1
	}, "the store to hold every message")

	f.all = append(f.all, stored{hash: mh, topic: shard64, m: marker})
	if n := server.store.Len(); n != len(f.all) {
		t.Fatalf("store holds %d messages, want %d", n, len(f.all))
	}
	return f
}

// queryAll runs q with StoreQueryAll and returns the pages' hashes and
// every message received.
func queryAll(t *testing.T, f *storeFixture, q store.Query) ([][][32]byte, []store.StoredMessage, error) {
	t.Helper()
	var pages [][][32]byte
	var msgs []store.StoredMessage
	n, err := f.client.StoreQueryAll(t.Context(), f.ai, q, func(p store.Page) error {
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
		q     store.Query
		want  []stored
		limit int // page size the store uses
	}{
		{"forward, pages of 25", store.Query{PubsubTopic: shard32, ContentTopics: []string{ctA}, Forward: true, Limit: 25, IncludeData: true}, a32, 25},
		{"backward, pages of 25", store.Query{PubsubTopic: shard32, ContentTopics: []string{ctA}, Limit: 25, IncludeData: true}, a32, 25},
		{"default page size 20", store.Query{PubsubTopic: shard32, ContentTopics: []string{ctA}, Forward: true, IncludeData: true}, a32, 20},
		{"limit above 100 lowered", store.Query{PubsubTopic: shard32, ContentTopics: []string{ctA}, Limit: 1000, IncludeData: true}, a32, 100},
		{"two content topics", store.Query{PubsubTopic: shard32, ContentTopics: []string{ctA, ctB}, Forward: true, Limit: 50, IncludeData: true},
			filterStored(all, on(shard32, ctA, ctB)), 50},
		{"pubsub topic only", store.Query{PubsubTopic: shard64, Forward: true, Limit: 3, IncludeData: true}, filterStored(all, on(shard64)), 3},
		{"no filter at all", store.Query{Forward: true, Limit: 100, IncludeData: true}, all, 100},
		{"unknown content topic", store.Query{PubsubTopic: shard32, ContentTopics: []string{"/x/1/y/proto"}, IncludeData: true}, nil, 20},
		{"pubsub topic not relayed", store.Query{PubsubTopic: wakuwire.ShardTopic(16, 1), IncludeData: true}, nil, 20},
		{"time range, both ends inclusive, forward", store.Query{PubsubTopic: shard32, ContentTopics: []string{ctA}, TimeStart: ts(10), TimeEnd: ts(22), Forward: true, Limit: 4, IncludeData: true},
			filterStored(a32, func(s stored) bool { return s.m.Timestamp >= ts(10) && s.m.Timestamp <= ts(22) }), 4},
		{"time range, backward", store.Query{PubsubTopic: shard32, ContentTopics: []string{ctA}, TimeStart: ts(10), TimeEnd: ts(22), Limit: 4, IncludeData: true},
			filterStored(a32, func(s stored) bool { return s.m.Timestamp >= ts(10) && s.m.Timestamp <= ts(22) }), 4},
		{"time range one ns inside both ends", store.Query{PubsubTopic: shard32, ContentTopics: []string{ctA}, TimeStart: ts(10) + 1, TimeEnd: ts(22) - 1, Forward: true, IncludeData: true},
			filterStored(a32, func(s stored) bool { return s.m.Timestamp > ts(10) && s.m.Timestamp < ts(22) }), 20},
		{"start only", store.Query{PubsubTopic: shard32, ContentTopics: []string{ctA}, TimeStart: ts(120), Forward: true, IncludeData: true}, a32[120:], 20},
		{"end only, backward", store.Query{PubsubTopic: shard32, ContentTopics: []string{ctA}, TimeEnd: ts(5), IncludeData: true}, a32[:6], 20},
		{"hashes only", store.Query{PubsubTopic: shard32, ContentTopics: []string{ctA}, Forward: true, Limit: 60}, a32, 60},
		{"hash lookup", store.Query{Hashes: [][32]byte{a32[7].hash, all[len(all)-1].hash, {1, 2, 3}, a32[3].hash, a32[7].hash}, Forward: true, IncludeData: true},
			[]stored{a32[3], a32[7], all[len(all)-1]}, 20},
		{"hash lookup, paged backward, no data", store.Query{Hashes: [][32]byte{a32[1].hash, a32[2].hash, a32[3].hash}, Limit: 2},
			[]stored{a32[1], a32[2], a32[3]}, 2},
		{"forward from a cursor", store.Query{PubsubTopic: shard32, ContentTopics: []string{ctA}, Cursor: a32[99].hash[:], Forward: true, Limit: 10, IncludeData: true}, a32[100:], 10},
		{"backward from a cursor", store.Query{PubsubTopic: shard32, ContentTopics: []string{ctA}, Cursor: a32[30].hash[:], Limit: 10, IncludeData: true}, a32[:30], 10},
		{"cursor on another content topic", store.Query{PubsubTopic: shard32, ContentTopics: []string{ctB}, Cursor: a32[60].hash[:], Forward: true, IncludeData: true},
			filterStored(all, func(s stored) bool { return on(shard32, ctB)(s) && s.m.Timestamp > ts(60) }), 20},
		{"cursor at the end: empty page", store.Query{PubsubTopic: shard32, ContentTopics: []string{ctA}, Cursor: a32[130].hash[:], Forward: true, IncludeData: true}, nil, 20},
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
		var serr *rpc.StatusError[store.Status]
		_, err := f.client.StoreQuery(t.Context(), f.ai, store.Query{PubsubTopic: shard32, Cursor: bytes.Repeat([]byte{7}, 32)})
		if !errors.As(err, &serr) || serr.Code != store.BadRequest || !strings.Contains(serr.Desc, "cursor not found") || serr.IsRetryable() {
			t.Fatalf("err = %v, want status 400 cursor not found", err)
		}
	})

	t.Run("queries the client refuses", func(t *testing.T) {
		eleven := make([]string, 11)
		for i := range eleven {
			eleven[i] = fmt.Sprintf("/x/1/t%d/proto", i)
		}
		for _, q := range []store.Query{
			{ContentTopics: []string{ctA}},
			{PubsubTopic: shard32, ContentTopics: eleven},
			{PubsubTopic: shard32, ContentTopics: []string{""}},
			{Hashes: [][32]byte{{1}}, PubsubTopic: shard32},
			{Hashes: [][32]byte{{1}}, TimeStart: 5},
			{TimeStart: 10, TimeEnd: 9},
			{Cursor: []byte{1, 2, 3}},
		} {
			if _, err := f.client.StoreQuery(t.Context(), f.ai, q); !errors.Is(err, store.ErrQuery) {
				t.Errorf("%+v: err = %v, want store.ErrQuery", q, err)
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
			{"no request id", storeRequest(t, &storepb.StoreQueryRequest{PubsubTopic: proto.String(shard32)}), 400, "request_id", 0, false},
			{"wrong wire type", append(storeRequest(t, &storepb.StoreQueryRequest{RequestId: "w"}), 0x55, 0x00), 400, "wire type", 0, false},
			{"content topics without pubsub topic", storeRequest(t, &storepb.StoreQueryRequest{RequestId: "x", ContentTopics: []string{ctA}}), 400, "pubsub topic", 0, false},
			{"hashes with a pubsub topic", storeRequest(t, &storepb.StoreQueryRequest{RequestId: "x", PubsubTopic: proto.String(shard32), MessageHashes: [][]byte{cursor}}), 400, "hash lookup", 0, false},
			{"hashes with a time range", storeRequest(t, &storepb.StoreQueryRequest{RequestId: "x", TimeEnd: proto.Int64(5), MessageHashes: [][]byte{cursor}}), 400, "hash lookup", 0, false},
			{"short hash", storeRequest(t, &storepb.StoreQueryRequest{RequestId: "x", MessageHashes: [][]byte{cursor[:31]}}), 400, "32 bytes", 0, false},
			{"short cursor", storeRequest(t, &storepb.StoreQueryRequest{RequestId: "x", PaginationCursor: cursor[:31]}), 400, "cursor hash length", 0, false},
			{"zero cursor", storeRequest(t, &storepb.StoreQueryRequest{RequestId: "x", PaginationCursor: make([]byte, 32)}), 400, "all zeroes", 0, false},
			{"eleven content topics", storeRequest(t, &storepb.StoreQueryRequest{RequestId: "x", PubsubTopic: proto.String(shard32), ContentTopics: eleven}), 400, "too many content topics", 0, false},
			{"limit 1000 served as 100", storeRequest(t, &storepb.StoreQueryRequest{RequestId: "x", PubsubTopic: proto.String(shard32), PaginationLimit: proto.Uint64(1000)}), 200, "OK", 100, true},
			{"limit 0 served as 20", storeRequest(t, &storepb.StoreQueryRequest{RequestId: "x", PubsubTopic: proto.String(shard32), PaginationLimit: proto.Uint64(0)}), 200, "OK", 20, true},
			{"no limit served as 20", storeRequest(t, &storepb.StoreQueryRequest{RequestId: "x", PubsubTopic: proto.String(shard32)}), 200, "OK", 20, true},
			{"empty pubsub topic is unset", append(storeRequest(t, &storepb.StoreQueryRequest{RequestId: "x", PaginationLimit: proto.Uint64(100)}), 0x52, 0x00), 200, "OK", 100, true},
			{"cursor, no data", storeRequest(t, &storepb.StoreQueryRequest{RequestId: "x", PaginationCursor: cursor, PaginationForward: true, PaginationLimit: proto.Uint64(10)}), 200, "OK", 10, true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp := rawStore(t, f.client, f.server.ID(), frame(tc.req))
				if resp.StatusCode == nil || resp.GetStatusCode() != tc.code || !strings.Contains(resp.GetStatusDesc(), tc.desc) ||
					len(resp.Messages) != tc.n || (resp.PaginationCursor != nil) != tc.cur {
					t.Fatalf("status %d %q, %d messages, cursor %x; want %d %q, %d messages, cursor %v",
						resp.GetStatusCode(), resp.GetStatusDesc(), len(resp.Messages), resp.PaginationCursor, tc.code, tc.desc, tc.n, tc.cur)
				}
				if tc.code == 200 && resp.RequestId != "x" {
					t.Fatalf("request id %q", resp.RequestId)
				}
				for _, kv := range resp.Messages {
					if kv.Message != nil || kv.PubsubTopic != nil {
						t.Fatal("data without include_data")
					}
				}
			})
		}
		// Only the length prefix of a request over the limit: answered
		// with 400 before the rest is read.
		resp := rawStore(t, f.client, f.server.ID(), protowire.AppendVarint(nil, store.MaxRequestSize+1))
		if store.Status(resp.GetStatusCode()) != store.BadRequest || !strings.Contains(resp.GetStatusDesc(), "too large") {
			t.Fatalf("request over the limit: %d %q", resp.GetStatusCode(), resp.GetStatusDesc())
		}
	})
}

// rawStore writes wire (a framed request) to the store of to and returns
// the decoded response.
func rawStore(t *testing.T, from *Node, to peer.ID, wire []byte) *storepb.StoreQueryResponse {
	t.Helper()
	s, err := from.Host().NewStream(t.Context(), to, store.Protocol)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := s.Write(wire); err != nil {
		t.Fatal(err)
	}
	_ = s.CloseWrite()
	b, err := rpc.ReadFrameGrowing(bufio.NewReader(s), store.MaxResponseSize(store.MaxPageSize))
	if err != nil {
		t.Fatal(err)
	}
	resp := new(storepb.StoreQueryResponse)
	if err := rpc.Unmarshal(b, resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

func frame(b []byte) []byte {
	return append(binary.AppendUvarint(nil, uint64(len(b))), b...)
}

// storeRequest encodes r, a request our client would not send.
func storeRequest(t *testing.T, r *storepb.StoreQueryRequest) []byte {
	t.Helper()
	b, err := proto.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
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
		testenv.Eventually(t, 5*time.Second, func() bool { return p.store.Has(hs[7]) }, "the last message stored")
		page, err := startPeer(t, Config{}).StoreQuery(t.Context(), peer.AddrInfo{ID: p.ID(), Addrs: p.Host().Addrs()}, store.Query{Forward: true})
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
		testenv.Eventually(t, 5*time.Second, func() bool { return p.store.Has(hs[9]) }, "the last message stored")
		page, err := startPeer(t, Config{}).StoreQuery(t.Context(), peer.AddrInfo{ID: p.ID(), Addrs: p.Host().Addrs()}, store.Query{Forward: true})
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
		if b := testutil.ToFloat64(p.metrics.Store.Bytes); b > budget || b != float64(p.store.Size()) {
			t.Fatalf("waku_store_bytes %v, store %d, budget %d", b, p.store.Size(), budget)
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
			page, err := client.StoreQuery(t.Context(), ai, store.Query{PubsubTopic: shard32, Forward: true})
			if err != nil {
				t.Fatal(err)
			}
			var out [][32]byte
			for _, m := range page.Messages {
				out = append(out, m.Hash)
			}
			return out
		}
		testenv.Eventually(t, 5*time.Second, func() bool {
			k := kept()
			return slices.Equal(k, [][32]byte{old, fresh}) || slices.Equal(k, [][32]byte{fresh})
		}, "both stored, or the old one already expired")

		testenv.Eventually(t, 5*time.Second, func() bool { return slices.Equal(kept(), [][32]byte{fresh}) }, "the old message to expire")
		testenv.Eventually(t, 5*time.Second, func() bool { return len(kept()) == 0 }, "the fresh one too")
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
	if _, err := c.StoreQuery(t.Context(), peer.AddrInfo{ID: p.ID(), Addrs: p.Host().Addrs()}, store.Query{}); err == nil || errors.Is(err, store.ErrResponse) {
		t.Fatalf("query of a peer without store: %v", err)
	}
}
