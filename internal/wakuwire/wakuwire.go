// Package wakuwire holds the Waku wire formats status-go uses to send a
// public-chat message, so the fleet can speak to a community's members
// without linking go-waku or status-go (neither is served by the Go module
// proxy): the 14/WAKU2-MESSAGE protobuf and its deterministic hash, the rfc26
// "version 1" symmetric payload, the status-go ProtocolMessage wrapper, the
// chat-derived content topic and key, and the protected-shard meta signature.
//
// It is pure: no network, no libp2p, no NATS. Everything here is checked
// against upstream vectors or an independent implementation in the tests;
// the layouts follow go-waku (84a4b1b) where the implementations differ,
// because status-go runs go-waku.
//
// Layering, innermost first (status-go SendPublic for a public chat):
//
//	ApplicationMetadataMessage (internal/announcer)
//	  -> WrapPublic          ProtocolMessage{installation_id, public_message}
//	  -> SealSymmetric       rfc26 v1 payload, AES-256-GCM with ChatKey(chatID)
//	  -> Message             WakuMessage{payload, ChatContentTopic(chatID), version 1, timestamp}
//	  -> relay/lightpush on a shard pubsub topic (ShardTopic)
package wakuwire

import "errors"

// ErrMalformed marks input that cannot be a well-formed wire object: a
// receiver drops such a message rather than crashing or guessing, so callers
// test for it with errors.Is and treat every such error alike.
var ErrMalformed = errors.New("wakuwire: malformed input")

// ErrKeySize reports a symmetric key that is not 32 bytes: rfc26 uses
// AES-256 only, and a short key is a caller bug, not a bad message.
var ErrKeySize = errors.New("wakuwire: symmetric key must be 32 bytes")

// ErrNotPublic reports a well-formed ProtocolMessage without a
// public_message: a 1:1 or hash-ratchet message this package cannot open.
var ErrNotPublic = errors.New("wakuwire: protocol message has no public_message")
