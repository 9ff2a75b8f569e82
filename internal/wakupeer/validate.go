package wakupeer

import (
	"context"
	"fmt"
	"time"

	"github.com/archivefleet/archivefleet/internal/wakuwire"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
)

const (
	// MaxRelayMessageSize is gossipsub's frame limit (WithMaxMessageSize):
	// 1 MiB, go-libp2p-pubsub's default and what Status runs (status-go
	// and go-waku; nwaku's own default is 150 KiB). A larger frame is
	// never read, so nothing larger reaches the validator, the store or a
	// subscriber.
	MaxRelayMessageSize = 1 << 20
	// MaxWakuMessageSize is the largest encoded WakuMessage relay carries:
	// the frame less relayFrameOverhead. Publish, the lightpush service
	// and the validator refuse larger ones, which gossipsub would
	// otherwise drop silently when sending.
	MaxWakuMessageSize = MaxRelayMessageSize - relayFrameOverhead
	// relayFrameOverhead bounds what a gossipsub RPC carrying one message
	// adds to it: tags, lengths and a shard topic (at most 21 bytes).
	relayFrameOverhead = 64
	// MaxClockGapSeconds is how far a relayed message's timestamp may be
	// from our clock, in whole seconds: nwaku's RLN validator
	// (waku_rln_relay/rln_relay.nim validateMessage, MaxClockGapSeconds in
	// waku_rln_relay/constants.nim) rejects when
	// uint64(abs(now - timestamp)) > 20, the difference truncated to whole
	// seconds, so a gap up to 20.99 s passes and a timestamp of 0 fails.
	// Without it, a message stamped far in the future or past is forwarded
	// by us where nwaku relays drop it, and lands in our store.
	MaxClockGapSeconds = 20
)

// Reasons a relayed message is refused (waku_relay_messages_rejected_total's
// reason label, lightpush's 420 descriptions).
const (
	rejectNotWakuMessage = "not_waku_message"
	rejectTooLarge       = "too_large"
	rejectNoTimestamp    = "no_timestamp"
	rejectTooOld         = "too_old"
	rejectTooNew         = "too_new"
	// rejectOverloaded: gossipsub dropped it before our validator ran
	// (validation queue full or too many validations at once).
	rejectOverloaded = "validation_overloaded"
	// ignoreRateLimited is not a rejection: the message is dropped without
	// a score penalty (ValidationIgnore).
	ignoreRateLimited = "rate_limited"
)

// checkMessage applies the relay rules that do not depend on the sender to
// a decoded message of size bytes at now: the size limit and the clock
// gap. It returns "" or the reason to reject it.
func checkMessage(m *wakuwire.Message, size int, now time.Time) string {
	if size > MaxWakuMessageSize {
		return rejectTooLarge
	}
	switch {
	case m.Timestamp == 0:
		return rejectNoTimestamp
	case m.Timestamp < 0:
		// Older than any gap; past this, both are positive and their
		// difference cannot overflow.
		return rejectTooOld
	}
	gap := now.UnixNano() - m.Timestamp
	switch {
	case gap/int64(time.Second) > MaxClockGapSeconds:
		return rejectTooOld
	case -gap/int64(time.Second) > MaxClockGapSeconds:
		return rejectTooNew
	}
	return ""
}

// describeReject is a rejection reason for a person (lightpush's 420).
func describeReject(reason string, m *wakuwire.Message, now time.Time) string {
	switch reason {
	case rejectNoTimestamp:
		return "invalid message: no timestamp"
	case rejectTooOld, rejectTooNew:
		return fmt.Sprintf("invalid message: timestamp %s is more than %d s from the relay's clock (%s)",
			time.Unix(0, m.Timestamp).UTC().Format(time.RFC3339), MaxClockGapSeconds, now.UTC().Format(time.RFC3339))
	case rejectTooLarge:
		return fmt.Sprintf("invalid message: larger than %d bytes", MaxWakuMessageSize)
	}
	return "invalid message: " + reason
}

// validate is the relay validator of every joined topic: the data must be a
// WakuMessage (nwaku waku_relay/protocol.nim generateOrderedValidator)
// within the size limit and MaxClockGapSeconds of our clock; a rejected
// message is neither delivered nor forwarded, and gossipsub scoring
// penalises the peer that sent it (p4). A peer over its rate
// (RelayPeerRate) has its messages ignored: dropped without penalty.
// Our own publications pass through it too, uncounted and unlimited.
func (p *Peer) validate(_ context.Context, from peer.ID, m *pubsub.Message) pubsub.ValidationResult {
	local := from == p.host.ID()
	if !local && !p.relayLimit.allow(from) {
		p.metrics.rejected(m.GetTopic(), ignoreRateLimited)
		return pubsub.ValidationIgnore
	}
	var wm wakuwire.Message
	var reason string
	switch {
	case len(m.Data) > MaxWakuMessageSize: // before the copy decoding makes
		reason = rejectTooLarge
	case wm.Unmarshal(m.Data) != nil:
		reason = rejectNotWakuMessage
	default:
		reason = checkMessage(&wm, len(m.Data), time.Now())
	}
	if reason != "" {
		if !local {
			p.metrics.rejected(m.GetTopic(), reason)
			p.log.Debug("waku relay: message rejected", "from", from, "pubsub_topic", m.GetTopic(), "reason", reason)
		}
		return pubsub.ValidationReject
	}
	m.ValidatorData = &wm
	return pubsub.ValidationAccept
}
