package archive

import (
	"bytes"
	"cmp"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/archivefleet/archivefleet/internal/pb"
)

// Topic is a Waku v1 legacy topic: 4 bytes, "/waku/1/0x<8 hex>/rfc26" as a content topic.
type Topic [4]byte

// ParseTopic parses "0x" and 8 hex digits.
func ParseTopic(s string) (Topic, error) {
	var t Topic
	b, err := decodeHex(s)
	if err != nil {
		return t, fmt.Errorf("topic %q: %w", truncate(s, 40), err)
	}
	if len(b) != len(t) {
		return t, fmt.Errorf("topic %q: want 4 bytes, got %d", truncate(s, 40), len(b))
	}
	copy(t[:], b)
	return t, nil
}

// String returns "0x" and 8 lower-case hex digits.
func (t Topic) String() string { return "0x" + hex.EncodeToString(t[:]) }

// MarshalText implements encoding.TextMarshaler.
func (t Topic) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (t *Topic) UnmarshalText(b []byte) error {
	v, err := ParseTopic(string(b))
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// HexBytes is a byte string written in JSON as "0x"-prefixed hex, like
// status-go's types.HexBytes.
type HexBytes []byte

// MarshalText implements encoding.TextMarshaler.
func (h HexBytes) MarshalText() ([]byte, error) {
	return []byte("0x" + hex.EncodeToString(h)), nil
}

// UnmarshalText implements encoding.TextUnmarshaler; the "0x" prefix is optional.
func (h *HexBytes) UnmarshalText(b []byte) error {
	v, err := decodeHexBytes(b)
	if err != nil {
		return err
	}
	*h = v
	return nil
}

func decodeHex(s string) ([]byte, error) {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	return hex.DecodeString(s)
}

// Message is one stored Waku message, the archive's copy (status-go's
// waku_messages row and protobuf.WakuMessage).
type Message struct {
	Sig          HexBytes `json:"sig"`                    // 65-byte uncompressed key of the Waku-layer signer
	Timestamp    uint64   `json:"timestamp"`              // unix seconds
	Topic        Topic    `json:"topic"`                  // 4-byte legacy topic
	Payload      HexBytes `json:"payload"`                // decrypted Waku v1 payload
	Padding      HexBytes `json:"padding,omitempty"`      // Waku v1 padding
	Hash         HexBytes `json:"hash"`                   // Waku message hash
	ThirdPartyID string   `json:"thirdPartyId,omitempty"` // set only for imported messages
}

// MaxMessageBytes is status-go's maxArchiveSizeInBytes: the cap on the sum of
// payload and sig per archive chunk. A single message above it cannot be archived.
const MaxMessageBytes = 30_000_000

// ErrTooLarge marks a message over MaxMessageBytes: well-formed, but no
// archive can hold it.
var ErrTooLarge = errors.New("message too large to archive")

// Size is what status-go counts against the 30,000,000-byte chunk cap.
func (m *Message) Size() int { return len(m.Payload) + len(m.Sig) }

// Valid is Validate() == nil without building an error: a cheap check for
// callers that count many invalid messages and explain few.
func (m *Message) Valid() bool {
	return len(m.Sig) == 65 && m.Sig[0] == 0x04 && len(m.Hash) > 0 && m.Size() <= MaxMessageBytes && utf8.ValidString(m.ThirdPartyID)
}

// Validate reports what would make a status-go member drop the message: a sig
// that is not an uncompressed public key, or a message no archive can hold.
func (m *Message) Validate() error {
	if len(m.Sig) != 65 || m.Sig[0] != 0x04 {
		return fmt.Errorf("sig must be a 65-byte uncompressed public key (0x04…), got %d bytes", len(m.Sig))
	}
	if len(m.Hash) == 0 {
		return fmt.Errorf("hash is empty")
	}
	if m.Size() > MaxMessageBytes {
		return fmt.Errorf("%w: payload+sig is %d bytes, over the %d-byte archive cap", ErrTooLarge, m.Size(), MaxMessageBytes)
	}
	if !utf8.ValidString(m.ThirdPartyID) {
		return fmt.Errorf("thirdPartyId is not valid UTF-8")
	}
	return nil
}

// ParseMessageJSON decodes one JSON message as DecodeMessageJSON does,
// without validating it.
func ParseMessageJSON(b []byte) (Message, error) { return parseMessageJSON(b) }

// DecodeMessageJSON decodes one JSON message and validates it. Unknown
// fields are refused; otherwise the rules are encoding/json's. Its memory is
// the input plus the decoded message.
func DecodeMessageJSON(b []byte) (Message, error) {
	m, err := parseMessageJSON(b)
	if err != nil {
		return m, fmt.Errorf("decode message: %w", err)
	}
	if err := m.Validate(); err != nil {
		return m, fmt.Errorf("message %s: %w", HexBytes(m.Hash).String(), err)
	}
	return m, nil
}

// String returns "0x"-prefixed hex.
func (h HexBytes) String() string { return "0x" + hex.EncodeToString(h) }

// compareMessages orders messages by timestamp, then hash, so that archives are
// deterministic however the messages were stored.
func compareMessages(a, b *Message) int {
	return cmp.Or(cmp.Compare(a.Timestamp, b.Timestamp), bytes.Compare(a.Hash, b.Hash),
		bytes.Compare(a.Sig, b.Sig), bytes.Compare(a.Payload, b.Payload))
}

func (m *Message) toProto() *pb.WakuMessage {
	return &pb.WakuMessage{
		Sig:          m.Sig,
		Timestamp:    m.Timestamp,
		Topic:        m.Topic[:],
		Payload:      m.Payload,
		Padding:      m.Padding,
		Hash:         m.Hash,
		ThirdPartyId: m.ThirdPartyID,
	}
}

// messageFromProto converts an archived message. A topic that is not 4 bytes
// is reported: status-go members could not map it to a filter either.
func messageFromProto(w *pb.WakuMessage) (Message, error) {
	m := Message{
		Sig:          w.GetSig(),
		Timestamp:    w.GetTimestamp(),
		Payload:      w.GetPayload(),
		Padding:      w.GetPadding(),
		Hash:         w.GetHash(),
		ThirdPartyID: w.GetThirdPartyId(),
	}
	if len(w.GetTopic()) != len(m.Topic) {
		return m, fmt.Errorf("message %s: topic is %d bytes, want 4", m.Hash.String(), len(w.GetTopic()))
	}
	copy(m.Topic[:], w.GetTopic())
	return m, nil
}

// wakuMessageSize is the encoded size of m as a pb.WakuMessage.
func wakuMessageSize(m *Message) int {
	field := func(n int) int {
		if n == 0 {
			return 0
		}
		return 1 + protowire.SizeVarint(uint64(n)) + n // every tag here is one byte
	}
	n := field(len(m.Sig)) + field(len(m.Topic)) + field(len(m.Payload)) + field(len(m.Padding)) +
		field(len(m.Hash)) + field(len(m.ThirdPartyID))
	if m.Timestamp != 0 {
		n += 1 + protowire.SizeVarint(m.Timestamp)
	}
	return n
}

// MarshalBinary encodes m as status-go's protobuf WakuMessage, deterministically:
// the compact form the fleet stores (about half the size of the JSON form).
func (m *Message) MarshalBinary() ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(m.toProto())
}

// UnmarshalBinary decodes what MarshalBinary wrote. It does not validate: call
// Validate for input from outside.
func (m *Message) UnmarshalBinary(b []byte) error {
	var w pb.WakuMessage
	if err := proto.Unmarshal(b, &w); err != nil {
		return fmt.Errorf("%w: message: %v", ErrMalformed, err)
	}
	v, err := messageFromProto(&w)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	*m = v
	return nil
}
