package lightpush

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/archivefleet/archivefleet/internal/waku/lightpush/lightpushpb"
	"github.com/archivefleet/archivefleet/internal/waku/ratelimit"
	"github.com/archivefleet/archivefleet/internal/waku/relay"
	"github.com/archivefleet/archivefleet/internal/waku/rpc"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
	"github.com/libp2p/go-libp2p/core/network"
	"google.golang.org/protobuf/proto"
)

// PeerRate and PeerBurst bound the requests one client may make per second,
// Rate and Burst those of all clients together. nwaku's limit
// (--rate-limit lightpush:volume/period,
// common/rate_limit/request_limiter.nim) is likewise a global bucket and
// one per peer; a request over either is answered 429 without being read.
const (
	PeerRate  = 10
	PeerBurst = 20
	Rate      = 100
	Burst     = 200
)

// MaxInFlight bounds the requests served at once, whatever the rates allow:
// each holds a frame of up to maxRequestSize (1.06 MiB) for up to
// DefaultTimeout, so at most 34 MiB are held by slow or stalled clients.
// Past it a request is answered 429 unread.
const MaxInFlight = 32

// Relay is what the service relays pushed messages with (*node.Node).
type Relay interface {
	// Publish relays m on pubsubTopic.
	Publish(ctx context.Context, pubsubTopic string, m *wakuwire.Message) ([32]byte, error)
	// TopicPeers is the number of relay peers on pubsubTopic.
	TopicPeers(pubsubTopic string) int
}

// ServiceConfig configures a Service.
type ServiceConfig struct {
	// Relay relays what is pushed, on PubsubTopics, the topics it joined.
	Relay        Relay
	PubsubTopics []string
	// Limit limits the clients; nil: a limiter of PeerRate, PeerBurst,
	// Rate and Burst.
	Limit *ratelimit.Limiter
	// Metrics may be nil.
	Metrics *Metrics
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Service serves lightpush v3: a pushed message is published by relay on
// its pubsub topic, as an nwaku service node does. A client over PeerRate,
// all clients over Rate, or MaxInFlight requests already being served get
// 429 before anything is read. Autosharding (no pubsub_topic) is not
// supported: the request is refused with 400 rather than guessed.
type Service struct {
	relay   Relay
	topics  map[string]bool
	limit   *ratelimit.Limiter
	slots   chan struct{} // requests being served
	metrics *Metrics
	log     *slog.Logger
}

// NewService returns a service relaying through cfg.Relay.
func NewService(cfg ServiceConfig) *Service {
	s := &Service{relay: cfg.Relay, topics: map[string]bool{}, limit: cfg.Limit, slots: make(chan struct{}, MaxInFlight),
		metrics: cfg.Metrics, log: cfg.Logger}
	for _, t := range cfg.PubsubTopics {
		s.topics[t] = true
	}
	if s.limit == nil {
		s.limit = ratelimit.New(PeerRate, PeerBurst, Rate, Burst)
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s
}

// InFlight is the number of requests being served.
func (s *Service) InFlight() int { return len(s.slots) }

// answer is a response with a status and, if not empty, a description.
func answer(id string, code Status, desc string) *lightpushpb.LightPushResponseV3 {
	r := &lightpushpb.LightPushResponseV3{RequestId: id, StatusCode: uint32(code)}
	if desc != "" {
		r.StatusDesc = proto.String(desc)
	}
	return r
}

// tooManyRequests is nwaku's answer to a request over the rate limit, sent
// without reading the request (waku_lightpush/protocol.nim): it has no
// request id to echo, hence "N/A".
func tooManyRequests() *lightpushpb.LightPushResponseV3 {
	return answer(rpc.UnknownRequestID, TooManyRequests, "Request rejected due to too many requests")
}

// Handle serves one request on st; ctx bounds the relaying.
func (s *Service) Handle(ctx context.Context, st network.Stream) {
	defer st.Close()
	remote := st.Conn().RemotePeer()
	_ = st.SetDeadline(time.Now().Add(DefaultTimeout))
	resp, ok, limited := tooManyRequests(), true, true
	if s.limit.Allow(remote) {
		select {
		case s.slots <- struct{}{}:
			limited = false
			resp, ok = s.read(ctx, st)
			<-s.slots
		default:
		}
	}
	if !ok {
		return
	}
	if limited {
		s.log.Debug("lightpush request refused unread: too many requests", "from", remote)
	}
	s.metrics.served(resp.StatusCode)
	out, err := proto.Marshal(resp)
	if err == nil {
		err = rpc.WriteFrame(st, out)
	}
	if err != nil {
		s.log.Debug("lightpush response not written", "from", remote, "err", err)
		_ = st.Reset()
	}
}

// read reads and serves one request; false: the stream was reset (the
// request was unreadable).
func (s *Service) read(ctx context.Context, st network.Stream) (*lightpushpb.LightPushResponseV3, bool) {
	b, err := rpc.ReadFrame(bufio.NewReader(st), maxRequestSize)
	if err != nil {
		s.log.Debug("lightpush request unreadable", "from", st.Conn().RemotePeer(), "err", err)
		_ = st.Reset()
		return nil, false
	}
	return s.serve(ctx, b), true
}

// serve answers one request, checked as nwaku's relay push handler does
// (waku_lightpush/callbacks.nim): the message must pass the relay's own
// rules (relay.CheckMessage) before it is published, so what we would not
// forward is refused with 420 and the reason rather than relayed. A request
// that does not decode is answered with request id "N/A", as nwaku does: its
// id was not read.
func (s *Service) serve(ctx context.Context, b []byte) *lightpushpb.LightPushResponseV3 {
	req := new(lightpushpb.LightPushRequestV3)
	var inMessage *rpc.FieldError
	switch err := rpc.Unmarshal(b, req); {
	case errors.As(err, &inMessage) && inMessage.Field == messageField:
		return answer(rpc.UnknownRequestID, InvalidMessage, "message is not a valid WakuMessage: "+inMessage.Err.Error())
	case err != nil:
		return answer(rpc.UnknownRequestID, BadRequest, "bad request: "+err.Error())
	case req.RequestId == "":
		return answer("", BadRequest, "bad request: no request_id")
	case req.Message == nil:
		return answer(req.RequestId, BadRequest, "bad request: no message")
	}
	topic := req.GetPubsubTopic()
	size := proto.Size(req.Message)
	switch {
	case size > MaxMessageSize:
		return answer(req.RequestId, PayloadTooLarge, fmt.Sprintf("message of %d bytes, limit %d", size, MaxMessageSize))
	case topic == "":
		return answer(req.RequestId, BadRequest, "pubsub_topic required (autosharding not supported)")
	case !s.topics[topic]:
		return answer(req.RequestId, UnsupportedPubsubTopic, "not relaying "+topic)
	}
	m := rpc.ToWire(req.Message)
	now := time.Now()
	if reason := relay.CheckMessage(m, size, now); reason != "" {
		return answer(req.RequestId, InvalidMessage, relay.DescribeReject(reason, m, now))
	}
	if err := m.Validate(); err != nil {
		return answer(req.RequestId, InvalidMessage, "invalid message: "+err.Error())
	}
	peers := s.relay.TopicPeers(topic)
	if peers == 0 {
		return answer(req.RequestId, NoPeersToRelay, "no relay peers on "+topic)
	}
	if _, err := s.relay.Publish(ctx, topic, m); err != nil {
		return answer(req.RequestId, InternalServerError, err.Error())
	}
	r := answer(req.RequestId, Success, "")
	r.RelayPeerCount = proto.Uint32(uint32(peers))
	return r
}
