package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DueEvent asks for a community's archives up to End (unix seconds). From is
// the scheduler's view of the last archive end; the archiver trusts its own
// committed state instead.
type DueEvent struct {
	Community string `json:"community"`
	From      uint64 `json:"from"`
	End       uint64 `json:"end"`
	Reason    string `json:"reason"`
}

// MsgID makes every publication of the same range one event.
func (e DueEvent) MsgID() string { return fmt.Sprintf("due:%s:%d", e.Community, e.End) }

// BuiltEvent records a committed build.
type BuiltEvent struct {
	Community string   `json:"community"`
	From      uint64   `json:"from"`
	End       uint64   `json:"end"`
	InfoHash  string   `json:"infoHash,omitempty"`
	Magnet    string   `json:"magnet,omitempty"`
	Archives  []string `json:"archives,omitempty"`
	Fence     int64    `json:"fence"`
}

// MsgID identifies the build of one range.
func (e BuiltEvent) MsgID() string { return fmt.Sprintf("built:%s:%d", e.Community, e.End) }

// SeedingEvent says a seeder serves a torrent.
type SeedingEvent struct {
	Community string `json:"community"`
	InfoHash  string `json:"infoHash"`
	Magnet    string `json:"magnet"`
	Seeder    string `json:"seeder"`
	Peer      string `json:"peer,omitempty"` // public host:port of the seeder, for x.pe
}

// MsgID identifies one seeder starting one torrent.
func (e SeedingEvent) MsgID() string {
	return fmt.Sprintf("seeding:%s:%s:%s", e.Community, e.InfoHash, e.Seeder)
}

// RepublishEvent asks the announcer to send the current magnet link again.
type RepublishEvent struct {
	Community string `json:"community"`
	Slot      int64  `json:"slot"` // cadence slot number, so replicas publish one event per slot
}

// MsgID identifies one cadence slot.
func (e RepublishEvent) MsgID() string { return fmt.Sprintf("republish:%s:%d", e.Community, e.Slot) }

// PruneEvent asks for the MESSAGES records a committed build archived to be
// removed: every record of Community with a stream sequence at most Seq (the
// build's watermark) and a timestamp before End (its committed end). BuiltAt
// is when that state was committed; the prune is due the pruner's grace
// after it. It is published as a message schedule on SubjectPruneSchedule,
// and the server fires it onto SubjectPruneDue (see internal/pruner).
type PruneEvent struct {
	Community string    `json:"community"`
	End       uint64    `json:"end"`
	Seq       uint64    `json:"seq"`
	BuiltAt   time.Time `json:"builtAt"`
}

// Announcement is one signed magnet-link message ready to send: the
// announcer makes it and publishes it on SubjectAnnounced (Msg), where the
// Waku edge takes it (KindAnnounced, as Raw: the signed bytes as they are,
// the facts in headers); the webhook gets it as JSON.
type Announcement struct {
	Community string `json:"community"`
	Clock     uint64 `json:"clock"`
	Magnet    string `json:"magnet"`
	InfoHash  string `json:"infoHash"`
	// Message is the ApplicationMetadataMessage bytes a member receives.
	Message []byte `json:"message"`
	// ChatID is status-go's legacy chat for magnet links.
	ChatID string `json:"chatId"`
}

// Headers of an announcement on SubjectAnnounced, which the Waku edge reads.
const (
	HeaderClock    = "Archivefleet-Clock"
	HeaderInfohash = "Archivefleet-Infohash"
	HeaderMagnet   = "Archivefleet-Magnet"
	HeaderChat     = "Archivefleet-Chat"
)

// MsgID identifies one announcement: its community's clock.
func (a *Announcement) MsgID() string { return fmt.Sprintf("announce:%s:%d", a.Community, a.Clock) }

// Msg is the announcement as published on SubjectAnnounced: the message
// bytes, the facts in headers.
func (a *Announcement) Msg() *nats.Msg {
	m := nats.NewMsg(SubjectAnnounced(a.Community))
	m.Data = a.Message
	m.Header.Set(HeaderClock, strconv.FormatUint(a.Clock, 10))
	m.Header.Set(HeaderInfohash, a.InfoHash)
	m.Header.Set(HeaderMagnet, a.Magnet)
	m.Header.Set(HeaderChat, a.ChatID)
	return m
}

// DeadLetter keeps a failed event's payload and why it failed.
type DeadLetter struct {
	Subject    string `json:"subject"`
	Stream     string `json:"stream"`
	StreamSeq  uint64 `json:"streamSeq"`
	Deliveries uint64 `json:"deliveries"`
	Reason     string `json:"reason"`
	Payload    []byte `json:"payload"`
}

// Publish sends v as JSON to subject with a deduplicating message id,
// repeating it over a cluster's transient errors (see publishRetry).
func (b *Bus) Publish(ctx context.Context, subject, msgID string, v any) (*jetstream.PubAck, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return publishRetrying(ctx, func(ctx context.Context) (*jetstream.PubAck, error) {
		return b.JS.Publish(ctx, subject, data, jetstream.WithMsgID(msgID))
	})
}

// PublishMsg sends a prepared message with a deduplicating id, repeating it
// over a cluster's transient errors (see publishRetry).
func (b *Bus) PublishMsg(ctx context.Context, m *nats.Msg, msgID string) (*jetstream.PubAck, error) {
	return publishRetrying(ctx, func(ctx context.Context) (*jetstream.PubAck, error) {
		return b.JS.PublishMsg(ctx, m, jetstream.WithMsgID(msgID))
	})
}

// publishRetry repeats an event's publish over transient errors (a stream
// between leaders, a node going down with the request in flight). Every
// publish through Publish and PublishMsg carries a message id, so a repeat
// of one that was stored after all (its ack lost) is dropped by the
// stream's duplicate window (Config.DedupWindow, minutes) instead of
// stored twice. An attempt is bounded so that a request lost with a node is
// repeated after a few seconds rather than after the caller's timeout.
var publishRetry = RetryPolicy{First: 20 * time.Millisecond, Max: time.Second, Budget: 5 * time.Second, Attempt: 3 * time.Second}

// publishRetrying runs publish under publishRetry. An ack that says
// Duplicate after an attempt that may have stored the message (it timed
// out, rather than reaching no server) is reported as not a duplicate: the
// stored copy is most likely this call's own, and callers read Duplicate as
// "someone else published this already" (archivectl's trigger refuses,
// backfill leaves the event out of what it published).
func publishRetrying(ctx context.Context, publish func(context.Context) (*jetstream.PubAck, error)) (*jetstream.PubAck, error) {
	var ack *jetstream.PubAck
	mayHaveLanded := false
	err := publishRetry.Do(ctx, func(ctx context.Context) error {
		var err error
		ack, err = publish(ctx)
		if MayHaveTakenEffect(err) {
			mayHaveLanded = true
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if ack.Duplicate && mayHaveLanded {
		cp := *ack
		cp.Duplicate = false
		ack = &cp
	}
	return ack, nil
}

// MayHaveTakenEffect reports whether a request that failed with err may
// nonetheless have been carried out: err is transient (IsTransient) but not
// one that says no server took the request — no responders, or an API
// error from a cluster refusing it (no leader, offline). A timeout is the
// typical case: the reply, not the request, may have been lost. A repeat
// of such a write may then meet its own first attempt (a duplicate, a
// compare-and-set conflict).
func MayHaveTakenEffect(err error) bool {
	if err == nil || !IsTransient(err) {
		return false
	}
	var apiErr *jetstream.APIError
	return !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, jetstream.ErrNoStreamResponse) && !errors.As(err, &apiErr)
}
