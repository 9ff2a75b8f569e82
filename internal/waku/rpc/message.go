package rpc

import "github.com/archivefleet/archivefleet/internal/wakuwire"

// WakuMessage is what the generated WakuMessage types offer: store's
// (storepb, from waku-proto's message.proto) and lightpush's (lightpushpb,
// from js-waku's copy) are two definitions of the same 14/WAKU2-MESSAGE.
type WakuMessage interface {
	GetPayload() []byte
	GetContentTopic() string
	GetVersion() uint32
	GetTimestamp() int64
	GetMeta() []byte
	GetEphemeral() bool
}

// ToWire returns m as a wakuwire.Message, sharing its byte slices.
// rate_limit_proof is left out, as wakuwire's own decoder skips it: the
// fleet neither sends nor checks RLN proofs.
func ToWire(m WakuMessage) *wakuwire.Message {
	return &wakuwire.Message{Payload: m.GetPayload(), ContentTopic: m.GetContentTopic(), Version: m.GetVersion(),
		Timestamp: m.GetTimestamp(), Meta: m.GetMeta(), Ephemeral: m.GetEphemeral()}
}
