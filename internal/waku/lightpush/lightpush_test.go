package lightpush

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/testenv"
	"github.com/archivefleet/archivefleet/internal/waku/lightpush/lightpushpb"
	"github.com/archivefleet/archivefleet/internal/waku/rpc"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// The client against a service written here; our service, which needs a
// relay to push into, is tested in internal/waku/node.

var shard32 = wakuwire.ShardTopic(16, 32)

func testMessage(text string) *wakuwire.Message {
	return &wakuwire.Message{
		Payload:      []byte(text),
		ContentTopic: "/waku/1/0x01020304/rfc26",
		Version:      1,
		Timestamp:    time.Now().UnixNano(),
	}
}

// testLightPushServer is a lightpush v3 service written here from the
// protocol's definition (the field numbers of lightpushpb). It is NOT an independent implementation: no third-party lightpush
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
	server := testenv.Libp2pHost(t, true)
	client := Client{Host: testenv.Libp2pHost(t, false)}
	srv := &testLightPushServer{t: t, got: make(chan lpRequest, 1)}
	server.SetStreamHandler(Protocol, srv.handle)
	service := peer.AddrInfo{ID: server.ID(), Addrs: server.Addrs()}

	for _, tc := range []struct {
		mode      string
		ctx       time.Duration
		want      Result
		code      Status // *rpc.StatusError[Status]
		retryable bool
		badResp   bool // wraps ErrResponse
		ctxDone   bool // context.DeadlineExceeded
		anyErr    bool // some error
	}{
		{mode: "ok", want: Result{StatusCode: 200, RelayPeers: 3}},
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
			res, err := client.Push(ctx, service, shard32, m)
			t.Logf("result %+v, err %v", res, err)
			select {
			case req := <-srv.got:
				if req.ID == "" || req.Topic != shard32 || wakuwire.Hash(shard32, req.Msg) != wakuwire.Hash(shard32, m) {
					t.Errorf("server got %+v", req)
				}
			default:
				t.Error("server saw no request")
			}
			var lpErr *rpc.StatusError[Status]
			switch {
			case tc.code != 0:
				if !errors.As(err, &lpErr) || lpErr.Code != tc.code || lpErr.Desc == "" || lpErr.IsRetryable() != tc.retryable {
					t.Fatalf("err = %v, want status %d retryable=%v", err, tc.code, tc.retryable)
				}
			case tc.badResp:
				if !errors.Is(err, ErrResponse) || errors.As(err, &lpErr) {
					t.Fatalf("err = %v, want ErrResponse", err)
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
		if _, err := client.Push(t.Context(), service, shard32, &wakuwire.Message{ContentTopic: "/a/1/b/proto"}); err == nil {
			t.Error("message without payload accepted")
		}
		big := testMessage("ok")
		big.Payload = make([]byte, MaxMessageSize)
		if _, err := client.Push(t.Context(), service, shard32, big); err == nil || !strings.Contains(err.Error(), "limit") {
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
		if got := (&rpc.StatusError[Status]{Code: Status(code)}).IsRetryable(); got != want {
			t.Errorf("IsRetryable(%d) = %v", code, got)
		}
	}
}

// TestCodec: the generated encoding is the one nwaku's codec writes, field
// by field: request_id, pubsub_topic when set, the message as wakuwire
// encodes it; request_id, status_code, status_desc and relay_peer_count
// when set.
func TestCodec(t *testing.T) {
	for _, m := range []*wakuwire.Message{
		testMessage("plain"),
		{Payload: []byte("no version, no timestamp"), ContentTopic: "/a/1/b/proto"},
		{Payload: []byte("all"), ContentTopic: "/a/1/b/proto", Version: 1, Timestamp: -5, Meta: []byte{1, 2}, Ephemeral: true},
	} {
		for _, topic := range []string{shard32, ""} {
			req := &lightpushpb.LightPushRequestV3{RequestId: "id", Message: toProto(m)}
			if topic != "" {
				req.PubsubTopic = proto.String(topic)
			}
			want := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "id")
			if topic != "" {
				want = protowire.AppendString(protowire.AppendTag(want, 20, protowire.BytesType), topic)
			}
			want = protowire.AppendBytes(protowire.AppendTag(want, 21, protowire.BytesType), m.Marshal())
			if got, err := proto.Marshal(req); err != nil || !bytes.Equal(got, want) {
				t.Errorf("request for %q on %q:\n got %x, %v\nwant %x", m.Payload, topic, got, err, want)
			}
		}
	}
	for _, tc := range []struct {
		resp *lightpushpb.LightPushResponseV3
		want []byte
	}{
		{func() *lightpushpb.LightPushResponseV3 {
			r := answer("r", Success, "")
			r.RelayPeerCount = proto.Uint32(3)
			return r
		}(), response("r", 200, "", 3)},
		{answer("N/A", TooManyRequests, "Request rejected due to too many requests"), response("N/A", 429, "Request rejected due to too many requests", 0)},
	} {
		if got, err := proto.Marshal(tc.resp); err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("response %v:\n got %x, %v\nwant %x", tc.resp, got, err, tc.want)
		}
	}
}
