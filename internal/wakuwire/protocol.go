package wakuwire

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// status-go protocol/encryption/protocol_message.proto field numbers.
const (
	fieldInstallationID   protowire.Number = 2
	fieldBundles          protowire.Number = 3
	fieldEncryptedMessage protowire.Number = 101
	fieldPublicMessage    protowire.Number = 102
)

// WrapPublic wraps an ApplicationMetadataMessage in status-go's encryption
// layer for a public chat: ProtocolMessage{installation_id=2,
// public_message=102}. It adds no X3DH bundle: status-go attaches the
// sender's bundle, but receivers accept none (protocol/encryption
// protocol.go), and a bundle that fails verification fails the whole
// message, so sending none is the safe choice. installation_id is ignored by
// receivers of public messages; any stable string will do. public_message is
// written even when empty (protobuf-go would omit it) so UnwrapPublic reads
// the result back as public; status-go, decoding with protobuf-go, sees no
// public_message then, but an empty application message carries no signature
// it could accept anyway. Otherwise the bytes equal protobuf-go's
// deterministic encoding.
func WrapPublic(installationID string, applicationMessage []byte) ([]byte, error) {
	if !utf8.ValidString(installationID) {
		return nil, errors.New("wakuwire: installation id is not UTF-8")
	}
	b := make([]byte, 0, len(installationID)+len(applicationMessage)+16)
	if installationID != "" {
		b = protowire.AppendTag(b, fieldInstallationID, protowire.BytesType)
		b = protowire.AppendString(b, installationID)
	}
	b = protowire.AppendTag(b, fieldPublicMessage, protowire.BytesType)
	b = protowire.AppendBytes(b, applicationMessage)
	return b, nil
}

// UnwrapPublic reads a ProtocolMessage as a public-chat receiver does and
// returns its public_message. Bundles and encrypted_message are skipped, not
// verified: status-go senders attach a bundle, and the fleet authenticates by
// the ApplicationMetadataMessage signature instead. Bytes that are not a
// protobuf message are ErrMalformed; a message without public_message (a
// private or hash-ratchet one) is ErrNotPublic.
func UnwrapPublic(b []byte) (installationID string, applicationMessage []byte, err error) {
	found := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", nil, malformed("protocol message tag", protowire.ParseError(n))
		}
		b = b[n:]
		switch num {
		case fieldInstallationID, fieldBundles, fieldEncryptedMessage, fieldPublicMessage:
			if typ != protowire.BytesType {
				return "", nil, malformed(fmt.Sprintf("protocol message field %d", num), fmt.Errorf("wire type %d, want bytes", typ))
			}
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return "", nil, malformed(fmt.Sprintf("protocol message field %d", num), protowire.ParseError(n))
			}
			b = b[n:]
			switch num {
			case fieldInstallationID:
				if !utf8.Valid(v) {
					return "", nil, malformed("protocol message installation_id", errors.New("invalid UTF-8"))
				}
				installationID = string(v)
			case fieldPublicMessage:
				applicationMessage = append([]byte{}, v...)
				found = true
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return "", nil, malformed(fmt.Sprintf("protocol message field %d", num), protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	if !found {
		return "", nil, ErrNotPublic
	}
	return installationID, applicationMessage, nil
}
