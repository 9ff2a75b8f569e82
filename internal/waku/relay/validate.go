package relay

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/archivefleet/archivefleet/internal/waku/ratelimit"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
)

const (
	// MaxFrameSize is gossipsub's frame limit (WithMaxMessageSize): 1 MiB,
	// go-libp2p-pubsub's default and what Status runs (status-go and
	// go-waku; nwaku's own default is 150 KiB). A larger frame is never
	// read, so nothing larger reaches the validator, the store or a
	// subscriber.
	MaxFrameSize = 1 << 20
	// MaxWakuMessageSize is the largest encoded WakuMessage relay carries:
	// the frame less frameOverhead. Publishing, the lightpush service and
	// the validator refuse larger ones, which gossipsub would otherwise drop
	// silently when sending.
	MaxWakuMessageSize = MaxFrameSize - frameOverhead
	// frameOverhead bounds what a gossipsub RPC carrying one message adds
	// to it: tags, lengths and a shard topic (at most 21 bytes).
	frameOverhead = 64
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

// PeerRate and PeerBurst bound the messages one peer may forward to us per
// second. nwaku has no such limit (it relies on gossipsub scoring and RLN);
// without one, a single peer can make us validate, cache and forward as
// much as it can send. 100 a second from each peer is taken to be well
// above what a community shard carries (not measured on status.prod); past
// it a peer's messages are ignored (not delivered or forwarded, no score
// penalty), and as gossipsub marks them seen, the same message from another
// peer is not taken either for 2 minutes.
const (
	PeerRate  = 100
	PeerBurst = 200
)

// Reasons a relayed message is refused (waku_relay_messages_rejected_total's
// reason label, lightpush's 420 descriptions).
const (
	RejectNotWakuMessage = "not_waku_message"
	RejectTooLarge       = "too_large"
	RejectNoTimestamp    = "no_timestamp"
	RejectTooOld         = "too_old"
	RejectTooNew         = "too_new"
	// RejectOverloaded: gossipsub dropped it before our validator ran
	// (validation queue full or too many validations at once).
	RejectOverloaded = "validation_overloaded"
	// IgnoreRateLimited is not a rejection: the message is dropped without
	// a score penalty (ValidationIgnore).
	IgnoreRateLimited = "rate_limited"
)

// CheckMessage applies the relay rules that do not depend on the sender to
// a decoded message of size bytes at now: the size limit and the clock
// gap. It returns "" or the reason to reject it.
func CheckMessage(m *wakuwire.Message, size int, now time.Time) string {
	if size > MaxWakuMessageSize {
		return RejectTooLarge
	}
	switch {
	case m.Timestamp == 0:
		return RejectNoTimestamp
	case m.Timestamp < 0:
		// Older than any gap; past this, both are positive and their
		// difference cannot overflow.
		return RejectTooOld
	}
	gap := now.UnixNano() - m.Timestamp
	switch {
	case gap/int64(time.Second) > MaxClockGapSeconds:
		return RejectTooOld
	case -gap/int64(time.Second) > MaxClockGapSeconds:
		return RejectTooNew
	}
	return ""
}

// DescribeReject is a rejection reason for a person (lightpush's 420).
func DescribeReject(reason string, m *wakuwire.Message, now time.Time) string {
	switch reason {
	case RejectNoTimestamp:
		return "invalid message: no timestamp"
	case RejectTooOld, RejectTooNew:
		return fmt.Sprintf("invalid message: timestamp %s is more than %d s from the relay's clock (%s)",
			time.Unix(0, m.Timestamp).UTC().Format(time.RFC3339), MaxClockGapSeconds, now.UTC().Format(time.RFC3339))
	case RejectTooLarge:
		return fmt.Sprintf("invalid message: larger than %d bytes", MaxWakuMessageSize)
	}
	return "invalid message: " + reason
}

// Validator is the relay validator of every joined topic: the data must be
// a WakuMessage (nwaku waku_relay/protocol.nim generateOrderedValidator)
// within the size limit and MaxClockGapSeconds of our clock; a rejected
// message is neither delivered nor forwarded, and gossipsub scoring
// penalises the peer that sent it (p4). A peer over its rate (limit) has
// its messages ignored: dropped without penalty. Our own publications pass
// through it too, uncounted and unlimited.
type Validator struct {
	self    peer.ID
	limit   *ratelimit.Limiter
	metrics *Metrics
	log     *slog.Logger
}

// NewValidator returns the validator of the peer self, limiting each
// forwarding peer with limit (of PeerRate and PeerBurst); metrics may be
// nil.
func NewValidator(self peer.ID, limit *ratelimit.Limiter, metrics *Metrics, log *slog.Logger) *Validator {
	return &Validator{self: self, limit: limit, metrics: metrics, log: log}
}

// Validate is a pubsub.ValidatorEx. An accepted message's decoded
// *wakuwire.Message is in m.ValidatorData.
func (v *Validator) Validate(_ context.Context, from peer.ID, m *pubsub.Message) pubsub.ValidationResult {
	local := from == v.self
	if !local && !v.limit.Allow(from) {
		v.metrics.Reject(m.GetTopic(), IgnoreRateLimited)
		return pubsub.ValidationIgnore
	}
	var wm wakuwire.Message
	var reason string
	switch {
	case len(m.Data) > MaxWakuMessageSize: // before the copy decoding makes
		reason = RejectTooLarge
	case wm.Unmarshal(m.Data) != nil:
		reason = RejectNotWakuMessage
	default:
		reason = CheckMessage(&wm, len(m.Data), time.Now())
	}
	if reason != "" {
		if !local {
			v.metrics.Reject(m.GetTopic(), reason)
			v.log.Debug("waku relay: message rejected", "from", from, "pubsub_topic", m.GetTopic(), "reason", reason)
		}
		return pubsub.ValidationReject
	}
	m.ValidatorData = &wm
	return pubsub.ValidationAccept
}
