package node

// js-waku's own Store v3 client (interop/js-relay/store-client.mjs, a
// @waku/sdk 0.0.27 light node) against our store service: the independent
// check of internal/waku/store's service. The messages reach our store by relay from a
// js-waku relay node (relay.mjs) and from our own peer's publications.

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/testenv"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
)

// jsStoreReply is a line of store-client.mjs (see its header).
type jsStoreReply struct {
	Event     string `json:"event"`
	Error     string `json:"error"`
	PeerID    string `json:"peerId"`
	Pages     []int  `json:"pages"`
	Undecoded int    `json:"undecoded"`
	Messages  []struct {
		HashHex      string `json:"hashHex"`
		PayloadHex   string `json:"payloadHex"`
		ContentTopic string `json:"contentTopic"`
		PubsubTopic  string `json:"pubsubTopic"`
		TimestampNs  string `json:"timestampNs"`
	} `json:"messages"`
}

type jsStoreClient struct {
	n       *testenv.NodeScript
	started jsStoreReply
}

// startJSStoreClient runs store-client.mjs against the store at addr (a
// multiaddr with /p2p) and waits until it is ready to query.
func startJSStoreClient(t *testing.T, addr string) *jsStoreClient {
	t.Helper()
	c := &jsStoreClient{n: testenv.StartNodeScript(t, "store-client.mjs", 40*time.Second, "STORE_PEER="+addr)}
	if err := json.Unmarshal(c.n.Ready, &c.started); err != nil || c.started.Event != "ready" {
		t.Fatalf("store-client.mjs: first line %s, want ready", c.n.Ready)
	}
	return c
}

func (c *jsStoreClient) query(req map[string]any) jsStoreReply {
	req["op"] = "query"
	var l jsStoreReply
	c.n.Call(req, &l, 30*time.Second)
	return l
}

// servedLog is a slog.Handler that passes records on and records, for every
// "store query served" line (store.Service.Handle), its status and message
// count.
type servedLog struct {
	slog.Handler
	mu     *sync.Mutex
	served *[]string
}

func (s *servedLog) Enabled(context.Context, slog.Level) bool { return true }

func (s *servedLog) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "store query served" {
		var status, n string
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "status":
				status = a.Value.String()
			case "messages":
				n = a.Value.String()
			}
			return true
		})
		s.mu.Lock()
		*s.served = append(*s.served, status+":"+n)
		s.mu.Unlock()
	}
	if !s.Handler.Enabled(ctx, r.Level) {
		return nil
	}
	return s.Handler.Handle(ctx, r)
}

func (s *servedLog) WithAttrs(as []slog.Attr) slog.Handler {
	return &servedLog{Handler: s.Handler.WithAttrs(as), mu: s.mu, served: s.served}
}

func (s *servedLog) WithGroup(name string) slog.Handler {
	return &servedLog{Handler: s.Handler.WithGroup(name), mu: s.mu, served: s.served}
}

func (s *servedLog) since(n int) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone((*s.served)[n:])
}

func (s *servedLog) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(*s.served)
}

func TestJSStoreClient(t *testing.T) {
	t.Parallel()
	const otherTopic = "/archivefleet/1/store-other/proto"
	relay := testenv.StartJSRelay(t)
	go func() {
		// relay.mjs prints every message it relays; unread, its event
		// channel fills and its replies stop.
		for {
			select {
			case <-relay.Events:
			case <-t.Context().Done():
				return
			}
		}
	}()
	served := &servedLog{Handler: quietLogger().Handler(), mu: &sync.Mutex{}, served: new([]string)}
	p := startPeer(t, Config{StoreService: true, StaticPeers: relay.Ready.Addrs, Logger: slog.New(served)})
	testenv.Eventually(t, 15*time.Second, func() bool {
		return p.MeshPeers(shard32) == 1 && relay.Call(map[string]any{"op": "peers"}).Mesh == 1
	}, "js-waku relay node and our store meshed")

	// 120 messages on jsContentTopic, message i dated base + i ms (whole ms:
	// js-waku's time filter is in ms): every fourth sent by js-waku's relay
	// node, the rest published by our store peer; and three on another
	// content topic. Version 0: js-waku's plain decoder takes only that.
	// base is a multiple of 4 ms, see "time range" below.
	base := time.Now().Add(-3*time.Second).UnixMilli() / 4 * 4
	var all []stored
	for i := range 123 {
		ct, text := jsContentTopic, fmt.Sprintf("msg %d", i)
		ms := base + int64(i)
		if i >= 120 {
			ct, text, ms = otherTopic, fmt.Sprintf("other %d", i), base+int64(i-120)*40+5
		}
		m := &wakuwire.Message{Payload: []byte(text), ContentTopic: ct, Timestamp: ms * 1e6}
		if i%4 == 0 && i < 120 {
			l := relay.Call(map[string]any{"op": "send", "payloadHex": hex.EncodeToString(m.Payload), "timestampMs": ms})
			if h := wakuwire.Hash(shard32, m); l.HashHex != hex.EncodeToString(h[:]) {
				t.Fatalf("js-waku sent %s, hash %s; ours of the same message %x", text, l.HashHex, h)
			}
		} else if _, err := p.Publish(t.Context(), shard32, m); err != nil {
			t.Fatal(err)
		}
		all = append(all, stored{hash: wakuwire.Hash(shard32, m), topic: shard32, m: m})
	}
	sortStored(all)
	testenv.Eventually(t, 15*time.Second, func() bool {
		for _, s := range all {
			if !p.store.Has(s.hash) {
				return false
			}
		}
		return p.store.Len() == len(all)
	}, "our store to hold all 123 messages")

	js := filterStored(all, func(s stored) bool { return s.m.ContentTopic == jsContentTopic })
	inMs := func(lo, hi int64) []stored {
		return filterStored(js, func(s stored) bool { return s.m.Timestamp >= lo*1e6 && s.m.Timestamp <= hi*1e6 })
	}

	client := startJSStoreClient(t, tcpAddr(t, p))
	for _, tc := range []struct {
		name   string
		req    map[string]any
		want   []stored
		limit  int
		served []string // what our service answered, page by page
	}{
		{"forward, pages of 50", map[string]any{"contentTopics": []string{jsContentTopic}, "limit": 50}, js, 50,
			// js-waku asks once more after the last page and stops on the empty one.
			[]string{"200:50", "200:50", "200:20", "200:0"}},
		{"backward, pages of 50", map[string]any{"contentTopics": []string{jsContentTopic}, "limit": 50, "forward": false}, js, 50,
			[]string{"200:50", "200:50", "200:20", "200:0"}},
		{"no limit: our default of 20", map[string]any{"contentTopics": []string{jsContentTopic}}, js, 20, nil},
		{"both content topics", map[string]any{"contentTopics": []string{jsContentTopic, otherTopic}, "limit": 100}, all, 100,
			[]string{"200:100", "200:23", "200:0"}},
		// Both ends inclusive, as in nwaku: messages 8 and 28 are in
		// (js-waku's docs say the end is exclusive). The bounds are whole
		// multiples of 4 ms because js-waku computes them as a float,
		// Date.getTime() * 1e6 (@waku/core store/rpc.js), which near 1.8e18
		// is a multiple of 256 ns: other ms values come out up to 128 ns
		// off, and a message dated exactly on such a bound may fall either
		// side. ms*1e6 with ms a multiple of 4 is a multiple of 256, exact.
		{"time range forward", map[string]any{"contentTopics": []string{jsContentTopic}, "limit": 50, "timeStartMs": base + 8, "timeEndMs": base + 28},
			inMs(base+8, base+28), 50, []string{"200:21", "200:0"}},
		{"time range backward, pages of 7", map[string]any{"contentTopics": []string{jsContentTopic}, "limit": 7, "forward": false, "timeStartMs": base + 8, "timeEndMs": base + 28},
			inMs(base+8, base+28), 7, []string{"200:7", "200:7", "200:7", "200:0"}},
		{"time range past the messages", map[string]any{"contentTopics": []string{jsContentTopic}, "timeStartMs": base + 500},
			nil, 20, []string{"200:0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := served.len()
			got := client.query(tc.req)
			forward := tc.req["forward"] != false
			pages := expectPages(tc.want, tc.limit, forward)
			var wantSizes []int
			var order []stored
			byHash := map[[32]byte]stored{}
			for _, s := range tc.want {
				byHash[s.hash] = s
			}
			for _, pg := range pages {
				if len(pg) > 0 { // js-waku yields no empty page
					wantSizes = append(wantSizes, len(pg))
				}
				for _, h := range pg {
					order = append(order, byHash[h])
				}
			}
			if !slices.Equal(got.Pages, wantSizes) || got.Undecoded != 0 || len(got.Messages) != len(order) {
				t.Fatalf("js-waku got pages %v (%d messages, %d undecoded), want %v (%d)", got.Pages, len(got.Messages), got.Undecoded, wantSizes, len(order))
			}
			for i, m := range got.Messages {
				w := order[i]
				if m.HashHex != hex.EncodeToString(w.hash[:]) || m.PayloadHex != hex.EncodeToString(w.m.Payload) ||
					m.PubsubTopic != shard32 || m.ContentTopic != w.m.ContentTopic || m.TimestampNs != strconv.FormatInt(w.m.Timestamp, 10) {
					t.Fatalf("message %d: js-waku got %+v, want %q hash %x ts %d", i, m, w.m.Payload, w.hash, w.m.Timestamp)
				}
			}
			if tc.served != nil {
				if s := served.since(before); !slices.Equal(s, tc.served) {
					t.Fatalf("our service answered %v, want %v", s, tc.served)
				}
			}
		})
	}
}
