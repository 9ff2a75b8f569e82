package wakupeer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/archivefleet/archivefleet/internal/wakuwire"
	"github.com/libp2p/go-libp2p/core/network"
	"google.golang.org/protobuf/encoding/protowire"
)

// lightPushRequest is a decoded LightpushRequest v3.
type lightPushRequest struct {
	ID, PubsubTopic string
	Message         []byte // the WakuMessage as sent
}

func (r *lightPushRequest) unmarshal(b []byte) error {
	*r = lightPushRequest{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if (num == 1 || num == 20 || num == 21) && typ != protowire.BytesType {
			return fmt.Errorf("field %d has wire type %d", num, typ)
		}
		if typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		switch num {
		case 1:
			r.ID = string(v)
		case 20:
			r.PubsubTopic = string(v)
		case 21:
			r.Message = v
		}
	}
	switch {
	case r.ID == "":
		return errors.New("no request_id")
	case r.Message == nil:
		return errors.New("no message")
	}
	return nil
}

func (r lightPushResponse) marshal() []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, r.RequestID)
	b = protowire.AppendTag(b, 10, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(r.StatusCode))
	if r.Desc != "" {
		b = protowire.AppendTag(b, 11, protowire.BytesType)
		b = protowire.AppendString(b, r.Desc)
	}
	if r.RelayPeers > 0 {
		b = protowire.AppendTag(b, 12, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(r.RelayPeers))
	}
	return b
}

// lightPushMaxInFlight bounds the requests served at once, whatever the
// rates allow: each holds a frame of up to maxLightPushRequest (1.06 MiB)
// for up to DefaultLightPushTimeout, so at most 34 MiB are held by slow
// or stalled clients. Past it a request is answered 429 unread.
const lightPushMaxInFlight = 32

// tooManyRequests is nwaku's answer to a request over the rate limit,
// sent without reading the request (waku_lightpush/protocol.nim): it has
// no request id to echo, hence "N/A".
var tooManyRequests = lightPushResponse{RequestID: lightPushUnknownRequestID, StatusCode: LightPushTooManyRequests,
	Desc: "Request rejected due to too many requests"}

// handleLightPush serves lightpush v3 (Config.LightPushService): the pushed
// message is published by relay on its pubsub topic, as an nwaku service
// node does. A client over LightPushPeerRate, all clients over
// LightPushRate, or lightPushMaxInFlight requests already being served get
// 429 before anything is read. Autosharding (no pubsub_topic) is not
// supported: the request is refused with 400 rather than guessed.
func (p *Peer) handleLightPush(s network.Stream) {
	defer s.Close()
	remote := s.Conn().RemotePeer()
	_ = s.SetDeadline(time.Now().Add(DefaultLightPushTimeout))
	resp, ok, limited := tooManyRequests, true, true
	if p.lightPushLimit.allow(remote) {
		select {
		case p.lightPushSlots <- struct{}{}:
			limited = false
			resp, ok = p.readLightPush(s)
			<-p.lightPushSlots
		default:
		}
	}
	if !ok {
		return
	}
	if limited {
		p.log.Debug("lightpush request refused unread: too many requests", "from", remote)
	}
	p.metrics.lightPushServed(resp.StatusCode)
	if err := writeDelimited(s, resp.marshal()); err != nil {
		p.log.Debug("lightpush response not written", "from", remote, "err", err)
		_ = s.Reset()
	}
}

// readLightPush reads and serves one request; false: the stream was reset
// (the request was unreadable).
func (p *Peer) readLightPush(s network.Stream) (lightPushResponse, bool) {
	b, err := readFrame(bufio.NewReader(s), maxLightPushRequest)
	if err != nil {
		p.log.Debug("lightpush request unreadable", "from", s.Conn().RemotePeer(), "err", err)
		_ = s.Reset()
		return lightPushResponse{}, false
	}
	return p.serveLightPush(p.ctx, b), true
}

// serveLightPush answers one request, checked as nwaku's relay push
// handler does (waku_lightpush/callbacks.nim): the message must pass the
// relay's own rules (validate) before it is published, so what we would
// not forward is refused with 420 and the reason rather than relayed.
func (p *Peer) serveLightPush(ctx context.Context, b []byte) lightPushResponse {
	var req lightPushRequest
	if err := req.unmarshal(b); err != nil {
		return lightPushResponse{RequestID: req.ID, StatusCode: LightPushBadRequest, Desc: "bad request: " + err.Error()}
	}
	r := lightPushResponse{RequestID: req.ID}
	var m wakuwire.Message
	switch {
	case len(req.Message) > MaxLightPushMessageSize:
		r.StatusCode, r.Desc = LightPushPayloadTooLarge, fmt.Sprintf("message of %d bytes, limit %d", len(req.Message), MaxLightPushMessageSize)
	case m.Unmarshal(req.Message) != nil:
		r.StatusCode, r.Desc = LightPushInvalidMessage, "message is not a valid WakuMessage"
	case req.PubsubTopic == "":
		r.StatusCode, r.Desc = LightPushBadRequest, "pubsub_topic required (autosharding not supported)"
	case p.topics[req.PubsubTopic] == nil:
		r.StatusCode, r.Desc = LightPushUnsupportedPubsubTopic, "not relaying "+req.PubsubTopic
	default:
		now := time.Now()
		if reason := checkMessage(&m, len(req.Message), now); reason != "" {
			r.StatusCode, r.Desc = LightPushInvalidMessage, describeReject(reason, &m, now)
			break
		}
		if err := m.Validate(); err != nil {
			r.StatusCode, r.Desc = LightPushInvalidMessage, "invalid message: "+err.Error()
			break
		}
		peers := p.TopicPeers(req.PubsubTopic)
		if peers == 0 {
			r.StatusCode, r.Desc = LightPushNoPeersToRelay, "no relay peers on "+req.PubsubTopic
			break
		}
		if _, err := p.Publish(ctx, req.PubsubTopic, &m); err != nil {
			r.StatusCode, r.Desc = LightPushInternalServerError, err.Error()
			break
		}
		r.StatusCode, r.RelayPeers = LightPushSuccess, uint32(peers)
	}
	return r
}
