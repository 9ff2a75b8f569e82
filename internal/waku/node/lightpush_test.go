package node

import (
	"bufio"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/testenv"
	"github.com/archivefleet/archivefleet/internal/waku/lightpush"
	"github.com/archivefleet/archivefleet/internal/waku/lightpush/lightpushpb"
	"github.com/archivefleet/archivefleet/internal/waku/rpc"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/encoding/protowire"
)

// lightPushRequest encodes a LightpushRequest v3 by hand, msg as it is
// given (valid or not): request_id=1, pubsub_topic=20 when set, message=21.
func lightPushRequest(id, pubsubTopic string, msg []byte) []byte {
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	b = protowire.AppendString(b, id)
	if pubsubTopic != "" {
		b = protowire.AppendTag(b, 20, protowire.BytesType)
		b = protowire.AppendString(b, pubsubTopic)
	}
	b = protowire.AppendTag(b, 21, protowire.BytesType)
	return protowire.AppendBytes(b, msg)
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
	testenv.Eventually(t, 10*time.Second, func() bool {
		return service.MeshPeers(shard32) == 1 && third.MeshPeers(shard32) == 1
	}, "service-third mesh")

	sub, cancel, err := third.Subscribe(shard32)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()

	m := testMessage("pushed")
	res, err := client.LightPush(t.Context(), ai, shard32, m)
	if err != nil || res.StatusCode != lightpush.Success || res.RelayPeers != 1 {
		t.Fatalf("push: %+v, %v; want 200 with 1 relay peer", res, err)
	}
	r := receive(t, sub, 5*time.Second)
	if r.Hash != wakuwire.Hash(shard32, m) || r.From != service.ID() {
		t.Fatalf("third peer got %+v", r)
	}

	var lpErr *rpc.StatusError[lightpush.Status]
	for _, tc := range []struct {
		name, topic string
		code        lightpush.Status
	}{
		{"topic not relayed", wakuwire.ShardTopic(16, 64), lightpush.UnsupportedPubsubTopic},
		{"no relay peers on the topic", wakuwire.ShardTopic(16, 128), lightpush.NoPeersToRelay},
		{"autosharding", "", lightpush.BadRequest},
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
		code lightpush.Status
	}{
		{"not a WakuMessage", lightPushRequest("r1", shard32, []byte{0xff, 0xff}), lightpush.InvalidMessage},
		{"no request id", lightPushRequest("", shard32, testMessage("x").Marshal()), lightpush.BadRequest},
		{"no message", []byte{0x0a, 0x02, 'r', '2'}, lightpush.BadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := client.Host().NewStream(t.Context(), service.ID(), lightpush.Protocol)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := rpc.WriteFrame(s, tc.req); err != nil {
				t.Fatal(err)
			}
			b, err := rpc.ReadFrame(bufio.NewReader(s), lightpush.MaxResponseSize)
			if err != nil {
				t.Fatal(err)
			}
			var resp lightpushpb.LightPushResponseV3
			if err := rpc.Unmarshal(b, &resp); err != nil || resp.StatusCode != uint32(tc.code) || resp.GetStatusDesc() == "" {
				t.Fatalf("response %v, %v; want status %d", &resp, err, tc.code)
			}
		})
	}
	if got := testutil.ToFloat64(service.metrics.LightPush.Served.WithLabelValues("200")); got != 1 {
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
			var lpErr *rpc.StatusError[lightpush.Status]
			if !errors.As(err, &lpErr) || lpErr.Code != lightpush.InvalidMessage || !strings.Contains(lpErr.Desc, tc.desc) || lpErr.IsRetryable() {
				t.Fatalf("err = %v, want 420 saying %q", err, tc.desc)
			}
		})
	}
	if _, err := client.LightPush(t.Context(), ai, shard32, testMessage("current")); !isCode(err, lightpush.NoPeersToRelay) {
		t.Fatalf("current message: %v, want 505 (validation passed, nobody to relay to)", err)
	}
	if n := testutil.ToFloat64(service.metrics.LightPush.Served.WithLabelValues("420")); n != 3 {
		t.Fatalf("420 counted %v times", n)
	}
}

func isCode(err error, code lightpush.Status) bool {
	var lpErr *rpc.StatusError[lightpush.Status]
	return errors.As(err, &lpErr) && lpErr.Code == code
}

// TestLightPushServiceRateLimit: with the service's clock stopped (no
// refill), a client gets lightpush.PeerBurst requests served, then 429
// (retryable, as nwaku's, unread); other clients are not affected until
// all of them together spend lightpush.Burst.
func TestLightPushServiceRateLimit(t *testing.T) {
	t.Parallel()
	service := startPeer(t, Config{LightPushService: true})
	stopped := time.Now()
	service.lightPushLimit.SetClock(func() time.Time { return stopped })
	ai := peer.AddrInfo{ID: service.ID(), Addrs: service.Host().Addrs()}
	spent := 0
	push := func(c *Node, n int) (served int, limited bool) {
		for i := range n {
			_, err := c.LightPush(t.Context(), ai, shard32, testMessage("x"))
			switch {
			case isCode(err, lightpush.TooManyRequests):
				var lpErr *rpc.StatusError[lightpush.Status]
				if errors.As(err, &lpErr); !lpErr.IsRetryable() || lpErr.Desc == "" {
					t.Fatalf("429 %+v", lpErr)
				}
				if i < n-1 {
					t.Fatalf("request %d refused, then more were asked", i)
				}
				return served, true
			case isCode(err, lightpush.NoPeersToRelay): // served: nobody relays with the service
				served++
				spent++
			default:
				t.Fatalf("push %d: %v", i, err)
			}
		}
		return served, false
	}
	first := startPeer(t, Config{Shards: []uint16{64}})
	if served, _ := push(first, lightpush.PeerBurst); served != lightpush.PeerBurst {
		t.Fatalf("first client: %d served", served)
	}
	if _, limited := push(first, 1); !limited {
		t.Fatal("a client past its burst was served")
	}
	for spent < lightpush.Burst {
		c := startPeer(t, Config{Shards: []uint16{64}})
		if served, _ := push(c, min(lightpush.PeerBurst, lightpush.Burst-spent)); served == 0 {
			t.Fatalf("a new client was refused with %d of %d spent", spent, lightpush.Burst)
		}
	}
	if _, limited := push(startPeer(t, Config{Shards: []uint16{64}}), 1); !limited {
		t.Fatal("a new client was served past the global burst")
	}
}

// TestLightPushServiceInFlight: requests being read hold one of
// lightpush.MaxInFlight slots; past them a request is refused 429 at once,
// and the slots come back when the stalled requests end.
func TestLightPushServiceInFlight(t *testing.T) {
	t.Parallel()
	service := startPeer(t, Config{LightPushService: true})
	ai := peer.AddrInfo{ID: service.ID(), Addrs: service.Host().Addrs()}
	// Several clients, each within its rate.
	var streams []network.Stream
	for len(streams) < lightpush.MaxInFlight {
		c := startPeer(t, Config{Shards: []uint16{64}})
		if err := c.Host().Connect(t.Context(), ai); err != nil {
			t.Fatal(err)
		}
		for range min(lightpush.PeerBurst/2, lightpush.MaxInFlight-len(streams)) {
			s, err := c.Host().NewStream(t.Context(), service.ID(), lightpush.Protocol)
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
	testenv.Eventually(t, 10*time.Second, func() bool { return service.lightPush.InFlight() == lightpush.MaxInFlight }, "every slot taken")
	late := startPeer(t, Config{Shards: []uint16{64}})
	if _, err := late.LightPush(t.Context(), ai, shard32, testMessage("late")); !isCode(err, lightpush.TooManyRequests) {
		t.Fatalf("push with every slot taken: %v, want 429", err)
	}
	for _, s := range streams {
		_ = s.Reset()
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return service.lightPush.InFlight() == 0 }, "slots released")
	if _, err := late.LightPush(t.Context(), ai, shard32, testMessage("later")); !isCode(err, lightpush.NoPeersToRelay) {
		t.Fatalf("push after the stalled requests ended: %v, want 505", err)
	}
}
