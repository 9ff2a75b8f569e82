package wakuwire

import (
	"errors"
	"fmt"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
)

// PublicMessage builds the WakuMessage status-go's SendPublic produces for a
// public chat (a community's "<0xID>-magnetlinks" or "<0xID>-memberUpdate"
// chat): payload = SealSymmetric(WrapPublic(installationID,
// applicationMessage), ChatKey(chatID), signer), content topic
// ChatContentTopic(chatID), version 1, timestamp now in nanoseconds. The
// result still needs a pubsub topic (the community's shard) and, on a
// protected shard, SignMeta. It derives the chat key every call, which is
// slow by design; use PublicMessageWithKey with a cached key when sending
// often.
func PublicMessage(chatID, installationID string, applicationMessage []byte, signer *secp256k1.PrivateKey, now time.Time) (*Message, error) {
	return PublicMessageWithKey(chatID, ChatKey(chatID), installationID, applicationMessage, signer, now)
}

// PublicMessageWithKey is PublicMessage with the chat key supplied, so
// callers can cache ChatKey(chatID). key must be that key: members derive it
// from the chat ID and cannot open anything else. signer is required:
// status-go drops a transport message whose signer it cannot recover
// (protocol/v1/status_message.go HandleTransport). Any key works — the
// application layer's signature, not this one, identifies the community.
func PublicMessageWithKey(chatID string, key []byte, installationID string, applicationMessage []byte, signer *secp256k1.PrivateKey, now time.Time) (*Message, error) {
	if chatID == "" {
		return nil, errors.New("wakuwire: empty chat id")
	}
	if signer == nil {
		return nil, errors.New("wakuwire: a signer is required; status-go drops unsigned messages")
	}
	wrapped, err := WrapPublic(installationID, applicationMessage)
	if err != nil {
		return nil, err
	}
	payload, err := SealSymmetric(wrapped, key, signer)
	if err != nil {
		return nil, fmt.Errorf("wakuwire: seal for chat %q: %w", chatID, err)
	}
	return &Message{
		Payload:      payload,
		ContentTopic: ChatContentTopic(chatID),
		Version:      1,
		Timestamp:    now.UnixNano(),
	}, nil
}
