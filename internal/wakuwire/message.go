package wakuwire

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of 14/WAKU2-MESSAGE (go-waku waku/v2/protocol/pb/message.proto).
const (
	fieldPayload        protowire.Number = 1
	fieldContentTopic   protowire.Number = 2
	fieldVersion        protowire.Number = 3
	fieldTimestamp      protowire.Number = 10
	fieldMeta           protowire.Number = 11
	fieldRateLimitProof protowire.Number = 21 // skipped: the fleet neither sends nor checks RLN proofs
	fieldEphemeral      protowire.Number = 31
)

// MaxMetaSize is go-waku's limit on Meta (pb/validation.go): relays reject a
// longer one, so Validate does too.
const MaxMetaSize = 64

// Message is a 14/WAKU2-MESSAGE WakuMessage, the unit relay, lightpush,
// filter and store carry. It is hand-encoded rather than generated so the
// module needs no go-waku and the encoding is pinned byte for byte (the hash
// and the protected-shard signature are over these fields, not the bytes, but
// the js-waku interop and gossipsub message id are over the bytes).
type Message struct {
	Payload      []byte // rfc26 sealed payload for Version 1
	ContentTopic string
	Version      uint32
	Timestamp    int64 // unix nanoseconds; zigzag (sint64) on the wire
	Meta         []byte
	Ephemeral    bool
}

// Marshal encodes m in field-number order (what protobuf-go's deterministic
// encoder produces for go-waku's message) and omits zero fields. go-waku
// declares version, timestamp, meta and ephemeral as proto3 `optional`, so it
// would emit an explicitly set zero; omitting it decodes the same everywhere,
// and keeps a zero timestamp out of the way of the hash convention.
func (m *Message) Marshal() []byte {
	n := len(m.Payload) + len(m.ContentTopic) + len(m.Meta) + 40
	b := make([]byte, 0, n)
	if len(m.Payload) > 0 {
		b = protowire.AppendTag(b, fieldPayload, protowire.BytesType)
		b = protowire.AppendBytes(b, m.Payload)
	}
	if m.ContentTopic != "" {
		b = protowire.AppendTag(b, fieldContentTopic, protowire.BytesType)
		b = protowire.AppendString(b, m.ContentTopic)
	}
	if m.Version != 0 {
		b = protowire.AppendTag(b, fieldVersion, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(m.Version))
	}
	if m.Timestamp != 0 {
		b = protowire.AppendTag(b, fieldTimestamp, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeZigZag(m.Timestamp))
	}
	if len(m.Meta) > 0 {
		b = protowire.AppendTag(b, fieldMeta, protowire.BytesType)
		b = protowire.AppendBytes(b, m.Meta)
	}
	if m.Ephemeral {
		b = protowire.AppendTag(b, fieldEphemeral, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	return b
}

// Unmarshal decodes a WakuMessage into m, replacing its contents. It skips
// unknown fields (rate_limit_proof=21 and whatever later versions add) so
// messages from newer nodes still open, but a known field with the wrong wire
// type, a truncated field, or a content topic that is not UTF-8 is
// ErrMalformed: protobuf-go (hence go-waku, hence status-go) would drop such
// a message or mis-read it, and the fleet must not archive what members never
// saw. Byte fields are copied, so b may be reused. As in protobuf, the last
// occurrence of a repeated scalar field wins.
func (m *Message) Unmarshal(b []byte) error {
	*m = Message{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return malformed("waku message tag", protowire.ParseError(n))
		}
		b = b[n:]
		want, known := wireTypes[num]
		if !known {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return malformed(fmt.Sprintf("waku message field %d", num), protowire.ParseError(n))
			}
			b = b[n:]
			continue
		}
		if typ != want {
			return malformed(fmt.Sprintf("waku message field %d", num), fmt.Errorf("wire type %d, want %d", typ, want))
		}
		switch typ {
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return malformed(fmt.Sprintf("waku message field %d", num), protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case fieldPayload:
				m.Payload = append([]byte{}, v...)
			case fieldContentTopic:
				if !utf8.Valid(v) {
					return malformed("waku message content_topic", errors.New("invalid UTF-8"))
				}
				m.ContentTopic = string(v)
			case fieldMeta:
				m.Meta = append([]byte{}, v...)
			}
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return malformed(fmt.Sprintf("waku message field %d", num), protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case fieldVersion:
				m.Version = uint32(v) // protobuf truncates an over-long uint32 the same way
			case fieldTimestamp:
				m.Timestamp = protowire.DecodeZigZag(v)
			case fieldEphemeral:
				m.Ephemeral = v != 0
			}
		}
	}
	return nil
}

var wireTypes = map[protowire.Number]protowire.Type{
	fieldPayload:      protowire.BytesType,
	fieldContentTopic: protowire.BytesType,
	fieldVersion:      protowire.VarintType,
	fieldTimestamp:    protowire.VarintType,
	fieldMeta:         protowire.BytesType,
	fieldEphemeral:    protowire.VarintType,
}

// Validate applies go-waku's publish-time checks (pb/validation.go): relays
// and lightpush servers refuse a message without payload or content topic,
// or with more than MaxMetaSize bytes of meta, so failing early is kinder.
func (m *Message) Validate() error {
	switch {
	case len(m.Payload) == 0:
		return errors.New("wakuwire: message has no payload")
	case m.ContentTopic == "":
		return errors.New("wakuwire: message has no content topic")
	case len(m.Meta) > MaxMetaSize:
		return fmt.Errorf("wakuwire: meta is %d bytes, limit %d", len(m.Meta), MaxMetaSize)
	}
	return nil
}

// Hash is the 14/WAKU2-MESSAGE deterministic message hash, the id store
// queries, store cursors and status-go's archive records use:
// SHA-256(pubsubTopic ‖ payload ‖ content_topic ‖ meta ‖ timestamp as 8-byte
// big-endian). The 8 timestamp bytes are appended even when the timestamp is
// 0, as go-waku (pb/utils.go) and nwaku do; js-waku leaves them out for an
// unset timestamp, so hashes of timestamp-less messages differ there. Every
// message the fleet sends carries a timestamp, so the choice only matters
// when hashing others' messages; it follows the implementations status-go
// and the store nodes run.
func Hash(pubsubTopic string, m *Message) [32]byte {
	h := sha256.New()
	h.Write([]byte(pubsubTopic))
	h.Write(m.Payload)
	h.Write([]byte(m.ContentTopic))
	h.Write(m.Meta)
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], uint64(m.Timestamp))
	h.Write(ts[:])
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func malformed(what string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrMalformed, what, err)
}
