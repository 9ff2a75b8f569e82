package wakupeer

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/wakuwire"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/encoding/protowire"
)

// testLightPushServer is a lightpush v3 service written here from the spec
// (waku-edge.md §3, waku-org/specs lightpush.md, nwaku rpc.nim field
// numbers). It is NOT an independent implementation: no third-party lightpush
// server is available to these tests (there is none on npm, and nwaku is not
// run here), so it only checks the client against our reading of the spec.
// Its behaviour is picked by the pushed message's payload.
type testLightPushServer struct {
	t   *testing.T
	got chan lpRequest
}

type lpRequest struct {
	ID, Topic string
	Msg       *wakuwire.Message
}

// decodeRequest parses a LightpushRequest independently of the client's encoder.
func decodeRequest(b []byte) (lpRequest, error) {
	var r lpRequest
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return r, protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return r, protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return r, protowire.ParseError(n)
		}
		b = b[n:]
		switch num {
		case 1:
			r.ID = string(v)
		case 20:
			r.Topic = string(v)
		case 21:
			r.Msg = new(wakuwire.Message)
			if err := r.Msg.Unmarshal(v); err != nil {
				return r, err
			}
		}
	}
	if r.Msg == nil {
		return r, errors.New("no message")
	}
	return r, nil
}

func response(id string, code uint32, desc string, relayPeers uint32) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, id)
	b = protowire.AppendTag(b, 10, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(code))
	if desc != "" {
		b = protowire.AppendTag(b, 11, protowire.BytesType)
		b = protowire.AppendString(b, desc)
	}
	if relayPeers != 0 {
		b = protowire.AppendTag(b, 12, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(relayPeers))
	}
	return b
}

func frame(b []byte) []byte {
	return append(binary.AppendUvarint(nil, uint64(len(b))), b...)
}

func (srv *testLightPushServer) handle(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(s)
	n, err := binary.ReadUvarint(r)
	if err != nil || n > 2<<20 {
		srv.t.Errorf("server: request length %d: %v", n, err)
		_ = s.Reset()
		return
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		srv.t.Errorf("server: reading request: %v", err)
		_ = s.Reset()
		return
	}
	req, err := decodeRequest(b)
	if err != nil {
		srv.t.Errorf("server: decoding request: %v", err)
		_ = s.Reset()
		return
	}
	select {
	case srv.got <- req:
	default:
	}
	var out []byte
	switch mode, _, _ := strings.Cut(string(req.Msg.Payload), ":"); mode {
	case "ok":
		out = frame(response(req.ID, 200, "", 3))
	case "busy":
		out = frame(response(req.ID, 429, "rate limit exceeded", 0))
	case "unread":
		// nwaku's rate-limit answer: it did not read the request's id.
		out = frame(response("N/A", 429, "Request rejected due to too many requests", 0))
	case "unreadok":
		out = frame(response("N/A", 200, "", 1))
	case "nopeers":
		out = frame(response(req.ID, 505, "no peers to relay", 0))
	case "topic":
		out = frame(response(req.ID, 421, "unsupported pubsub topic", 0))
	case "wrongid":
		out = frame(response("not-"+req.ID, 200, "", 1))
	case "nostatus":
		var b []byte
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, req.ID)
		out = frame(b)
	case "garbage":
		out = frame([]byte{0x0a, 0xff, 0xff, 0xff})
	case "huge":
		out = binary.AppendUvarint(nil, 1<<20) // claims 1 MiB, sends nothing
	case "truncated":
		out = frame(response(req.ID, 200, "", 1))
		out = out[:len(out)-2]
	case "close":
	case "reset":
		_ = s.Reset()
		return
	case "hang":
		time.Sleep(2 * time.Second)
		return
	}
	if _, err := s.Write(out); err != nil {
		srv.t.Logf("server: write: %v", err)
	}
}

func TestLightPush(t *testing.T) {
	t.Parallel()
	server := startPeer(t, Config{})
	client := startPeer(t, Config{Shards: []uint16{64}})
	srv := &testLightPushServer{t: t, got: make(chan lpRequest, 1)}
	server.Host().SetStreamHandler(LightPushProtocol, srv.handle)
	service := peer.AddrInfo{ID: server.ID(), Addrs: server.Host().Addrs()}

	for _, tc := range []struct {
		mode      string
		ctx       time.Duration
		want      LightPushResult
		code      uint32 // *LightPushError
		retryable bool
		badResp   bool // wraps ErrLightPushResponse
		ctxDone   bool // context.DeadlineExceeded
		anyErr    bool // some error
	}{
		{mode: "ok", want: LightPushResult{StatusCode: 200, RelayPeers: 3}},
		{mode: "busy", code: 429, retryable: true},
		{mode: "unread", code: 429, retryable: true},
		{mode: "unreadok", badResp: true},
		{mode: "nopeers", code: 505, retryable: true},
		{mode: "topic", code: 421},
		{mode: "wrongid", badResp: true},
		{mode: "nostatus", badResp: true},
		{mode: "garbage", badResp: true},
		{mode: "huge", badResp: true},
		{mode: "truncated", badResp: true},
		{mode: "close", badResp: true},
		{mode: "reset", anyErr: true},
		{mode: "hang", ctx: 300 * time.Millisecond, ctxDone: true},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			ctx := t.Context()
			if tc.ctx > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.ctx)
				defer cancel()
			}
			m := testMessage(tc.mode + ": hello")
			start := time.Now()
			res, err := client.LightPush(ctx, service, shard32, m)
			t.Logf("result %+v, err %v", res, err)
			select {
			case req := <-srv.got:
				if req.ID == "" || req.Topic != shard32 || wakuwire.Hash(shard32, req.Msg) != wakuwire.Hash(shard32, m) {
					t.Errorf("server got %+v", req)
				}
			default:
				t.Error("server saw no request")
			}
			var lpErr *LightPushError
			switch {
			case tc.code != 0:
				if !errors.As(err, &lpErr) || lpErr.Code != tc.code || lpErr.Desc == "" || lpErr.IsRetryable() != tc.retryable {
					t.Fatalf("err = %v, want LightPushError %d retryable=%v", err, tc.code, tc.retryable)
				}
			case tc.badResp:
				if !errors.Is(err, ErrLightPushResponse) || errors.As(err, &lpErr) {
					t.Fatalf("err = %v, want ErrLightPushResponse", err)
				}
			case tc.ctxDone:
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("err = %v, want deadline exceeded", err)
				}
				if d := time.Since(start); d > 1500*time.Millisecond {
					t.Fatalf("took %v after a 300ms deadline", d)
				}
			case tc.anyErr:
				if err == nil || errors.As(err, &lpErr) {
					t.Fatalf("err = %v, want a stream error", err)
				}
			default:
				if err != nil || res != tc.want {
					t.Fatalf("got %+v, %v; want %+v", res, err, tc.want)
				}
			}
		})
	}

	t.Run("client-side checks", func(t *testing.T) {
		if _, err := client.LightPush(t.Context(), service, shard32, &wakuwire.Message{ContentTopic: "/a/1/b/proto"}); err == nil {
			t.Error("message without payload accepted")
		}
		big := testMessage("ok")
		big.Payload = make([]byte, MaxLightPushMessageSize)
		if _, err := client.LightPush(t.Context(), service, shard32, big); err == nil || !strings.Contains(err.Error(), "limit") {
			t.Errorf("oversized message: %v", err)
		}
		select {
		case req := <-srv.got:
			t.Errorf("server got a request it should not have: %q", req.Msg.Payload)
		default:
		}
	})
}

func TestLightPushErrorRetryable(t *testing.T) {
	for code, want := range map[uint32]bool{400: false, 413: false, 420: false, 421: false, 429: true, 500: true, 503: true, 504: true, 505: true} {
		if got := (&LightPushError{Code: code}).IsRetryable(); got != want {
			t.Errorf("IsRetryable(%d) = %v", code, got)
		}
	}
}

// TestLightPushService: our client against our own service (Config.
// LightPushService), which relays what it is pushed. Neither side is
// independent (see testLightPushServer); the server's answers are checked
// against the codes nwaku sends in the same situations.
func TestLightPushService(t *testing.T) {
	t.Parallel()
	// The service relays shard 32 with a third peer subscribed; the client
	// is on shard 64 only, so a message it pushes reaches the third peer
	// through the service's relay, not its own.
	reg := prometheus.NewRegistry()
	service := startPeer(t, Config{LightPushService: true, Shards: []uint16{32, 128}, Registerer: reg})
	third := startPeer(t, Config{StaticPeers: []string{tcpAddr(t, service)}})
	client := startPeer(t, Config{Shards: []uint16{64}})
	ai := peer.AddrInfo{ID: service.ID(), Addrs: service.Host().Addrs()}
	eventually(t, 10*time.Second, "service-third mesh", func() bool {
		return service.MeshPeers(shard32) == 1 && third.MeshPeers(shard32) == 1
	})
	sub, cancel, err := third.Subscribe(shard32)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()

	m := testMessage("pushed")
	res, err := client.LightPush(t.Context(), ai, shard32, m)
	if err != nil || res.StatusCode != LightPushSuccess || res.RelayPeers != 1 {
		t.Fatalf("push: %+v, %v; want 200 with 1 relay peer", res, err)
	}
	r := receive(t, sub, 5*time.Second)
	if r.Hash != wakuwire.Hash(shard32, m) || r.From != service.ID() {
		t.Fatalf("third peer got %+v", r)
	}

	var lpErr *LightPushError
	for _, tc := range []struct {
		name, topic string
		code        uint32
	}{
		{"topic not relayed", wakuwire.ShardTopic(16, 64), LightPushUnsupportedPubsubTopic},
		{"no relay peers on the topic", wakuwire.ShardTopic(16, 128), LightPushNoPeersToRelay},
		{"autosharding", "", LightPushBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.LightPush(t.Context(), ai, tc.topic, testMessage("x"))
			if !errors.As(err, &lpErr) || lpErr.Code != tc.code || lpErr.Desc == "" {
				t.Fatalf("err = %v, want status %d with a description", err, tc.code)
			}
		})
	}
	// Requests our client would not send, written on a raw stream.
	for _, tc := range []struct {
		name string
		req  []byte
		code uint32
	}{
		{"not a WakuMessage", marshalLightPushRequest("r1", shard32, []byte{0xff, 0xff}), LightPushInvalidMessage},
		{"no request id", marshalLightPushRequest("", shard32, testMessage("x").Marshal()), LightPushBadRequest},
		{"no message", []byte{0x0a, 0x02, 'r', '2'}, LightPushBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := client.Host().NewStream(t.Context(), service.ID(), LightPushProtocol)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := writeDelimited(s, tc.req); err != nil {
				t.Fatal(err)
			}
			b, err := readFrame(bufio.NewReader(s), maxLightPushResponse)
			if err != nil {
				t.Fatal(err)
			}
			var resp lightPushResponse
			if err := resp.unmarshal(b); err != nil || !resp.HasStatus || resp.StatusCode != tc.code || resp.Desc == "" {
				t.Fatalf("response %+v, %v; want status %d", resp, err, tc.code)
			}
		})
	}
	if got := testutil.ToFloat64(service.metrics.LightPush.WithLabelValues("200")); got != 1 {
		t.Fatalf("served 200 counted %v times", got)
	}
}

// TestLightPushServiceRefusesStale: what relay would not forward is refused
// with 420 and the reason, before any relaying (the service has no relay
// peer, which would be 505).
func TestLightPushServiceRefusesStale(t *testing.T) {
	t.Parallel()
	service := startPeer(t, Config{LightPushService: true, Registerer: prometheus.NewRegistry()})
	client := startPeer(t, Config{Shards: []uint16{64}})
	ai := peer.AddrInfo{ID: service.ID(), Addrs: service.Host().Addrs()}
	for _, tc := range []struct {
		name string
		ts   int64
		desc string
	}{
		{"1000 hours old", time.Now().Add(-1000 * time.Hour).UnixNano(), "more than 20 s"},
		{"1000 days ahead", time.Now().Add(1000 * 24 * time.Hour).UnixNano(), "more than 20 s"},
		{"no timestamp", 0, "no timestamp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testMessage(tc.name)
			m.Timestamp = tc.ts
			_, err := client.LightPush(t.Context(), ai, shard32, m)
			var lpErr *LightPushError
			if !errors.As(err, &lpErr) || lpErr.Code != LightPushInvalidMessage || !strings.Contains(lpErr.Desc, tc.desc) || lpErr.IsRetryable() {
				t.Fatalf("err = %v, want 420 saying %q", err, tc.desc)
			}
		})
	}
	if _, err := client.LightPush(t.Context(), ai, shard32, testMessage("current")); !isCode(err, LightPushNoPeersToRelay) {
		t.Fatalf("current message: %v, want 505 (validation passed, nobody to relay to)", err)
	}
	if n := testutil.ToFloat64(service.metrics.LightPush.WithLabelValues("420")); n != 3 {
		t.Fatalf("420 counted %v times", n)
	}
}

func isCode(err error, code uint32) bool {
	var lpErr *LightPushError
	return errors.As(err, &lpErr) && lpErr.Code == code
}

// TestLightPushServiceRateLimit: with the service's clock stopped (no
// refill), a client gets LightPushPeerBurst requests served, then 429
// (retryable, as nwaku's, unread); other clients are not affected until
// all of them together spend LightPushBurst.
func TestLightPushServiceRateLimit(t *testing.T) {
	t.Parallel()
	service := startPeer(t, Config{LightPushService: true})
	stopped := time.Now()
	service.lightPushLimit.setClock(func() time.Time { return stopped })
	ai := peer.AddrInfo{ID: service.ID(), Addrs: service.Host().Addrs()}
	spent := 0
	push := func(c *Peer, n int) (served int, limited bool) {
		for i := range n {
			_, err := c.LightPush(t.Context(), ai, shard32, testMessage("x"))
			switch {
			case isCode(err, LightPushTooManyRequests):
				var lpErr *LightPushError
				if errors.As(err, &lpErr); !lpErr.IsRetryable() || lpErr.Desc == "" {
					t.Fatalf("429 %+v", lpErr)
				}
				if i < n-1 {
					t.Fatalf("request %d refused, then more were asked", i)
				}
				return served, true
			case isCode(err, LightPushNoPeersToRelay): // served: nobody relays with the service
				served++
				spent++
			default:
				t.Fatalf("push %d: %v", i, err)
			}
		}
		return served, false
	}
	first := startPeer(t, Config{Shards: []uint16{64}})
	if served, _ := push(first, LightPushPeerBurst); served != LightPushPeerBurst {
		t.Fatalf("first client: %d served", served)
	}
	if _, limited := push(first, 1); !limited {
		t.Fatal("a client past its burst was served")
	}
	for spent < LightPushBurst {
		c := startPeer(t, Config{Shards: []uint16{64}})
		if served, _ := push(c, min(LightPushPeerBurst, LightPushBurst-spent)); served == 0 {
			t.Fatalf("a new client was refused with %d of %d spent", spent, LightPushBurst)
		}
	}
	if _, limited := push(startPeer(t, Config{Shards: []uint16{64}}), 1); !limited {
		t.Fatal("a new client was served past the global burst")
	}
}

// TestLightPushServiceInFlight: requests being read hold one of
// lightPushMaxInFlight slots; past them a request is refused 429 at once,
// and the slots come back when the stalled requests end.
func TestLightPushServiceInFlight(t *testing.T) {
	t.Parallel()
	service := startPeer(t, Config{LightPushService: true})
	ai := peer.AddrInfo{ID: service.ID(), Addrs: service.Host().Addrs()}
	// Several clients, each within its rate.
	var streams []network.Stream
	for len(streams) < lightPushMaxInFlight {
		c := startPeer(t, Config{Shards: []uint16{64}})
		if err := c.Host().Connect(t.Context(), ai); err != nil {
			t.Fatal(err)
		}
		for range min(LightPushPeerBurst/2, lightPushMaxInFlight-len(streams)) {
			s, err := c.Host().NewStream(t.Context(), service.ID(), LightPushProtocol)
			if err != nil {
				t.Fatal(err)
			}
			// A length and no body: the service waits for the rest.
			if _, err := s.Write(binary.AppendUvarint(nil, 1000)); err != nil {
				t.Fatal(err)
			}
			streams = append(streams, s)
		}
	}
	eventually(t, 10*time.Second, "every slot taken", func() bool { return len(service.lightPushSlots) == lightPushMaxInFlight })
	late := startPeer(t, Config{Shards: []uint16{64}})
	if _, err := late.LightPush(t.Context(), ai, shard32, testMessage("late")); !isCode(err, LightPushTooManyRequests) {
		t.Fatalf("push with every slot taken: %v, want 429", err)
	}
	for _, s := range streams {
		_ = s.Reset()
	}
	eventually(t, 10*time.Second, "slots released", func() bool { return len(service.lightPushSlots) == 0 })
	if _, err := late.LightPush(t.Context(), ai, shard32, testMessage("later")); !isCode(err, LightPushNoPeersToRelay) {
		t.Fatalf("push after the stalled requests ended: %v, want 505", err)
	}
}
