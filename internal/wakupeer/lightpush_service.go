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

// handleLightPush serves lightpush v3 (Config.LightPushService): the pushed
// message is published by relay on its pubsub topic, as an nwaku service
// node does. Autosharding (no pubsub_topic) is not supported: the request is
// refused with 400 rather than guessed.
func (p *Peer) handleLightPush(s network.Stream) {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(DefaultLightPushTimeout))
	b, err := readFrame(bufio.NewReader(s), maxLightPushRequest)
	if err != nil {
		p.log.Debug("lightpush request unreadable", "from", s.Conn().RemotePeer(), "err", err)
		_ = s.Reset()
		return
	}
	resp := p.serveLightPush(p.ctx, b)
	p.metrics.lightPushServed(resp.StatusCode)
	if err := writeDelimited(s, resp.marshal()); err != nil {
		p.log.Debug("lightpush response not written", "from", s.Conn().RemotePeer(), "err", err)
		_ = s.Reset()
	}
}

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
