// Package bus holds archivefleet's NATS JetStream topology: the streams,
// consumers, KV buckets and object store every service uses, the events that
// flow between services, and a worker loop that takes one message per slot.
// Each worker queue is a Kind (kind.go), declared once with its event type,
// subject, stream and consumer; workers register with it, and every worker
// answers a failure through the one table in worker.go.
//
// Subjects (see README.md for the table):
//
//	archive.due.<community>        scheduler → archiver      DueEvent        (work queue)
//	archive.built.<community>      archiver  → observers     BuiltEvent      (latest per community)
//	archive.seeding.<community>    seeder    → announcer     SeedingEvent    (work queue)
//	archive.republish.<community>  scheduler → announcer     RepublishEvent  (work queue)
//	archive.announced.<community>  announcer → Waku bridge   Announcement (its signed bytes, facts in headers)
//	archive.dlq.<kind>             any       → operators     DeadLetter
//	msgs.<community>.<day>.<b>     ingest    → archiver      messages of a day, by hash bucket b (see internal/messages)
//	conflicts.<community>.<hash>   ingest    → operators     a record refused for a hash stored with other content
//	archive.prune.schedule.<c>     pruner    → (server)      PruneEvent      (a JetStream message schedule)
//	archive.prune.due.<c>          (server)  → pruner        PruneEvent      (work queue; see SetupPrune)
package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stream, consumer and bucket names.
const (
	StreamDue       = "ARCHIVE_DUE"
	StreamBuilt     = "ARCHIVE_BUILT"
	StreamSeeding   = "ARCHIVE_SEEDING"
	StreamAnnounced = "ARCHIVE_ANNOUNCED"
	StreamDLQ       = "ARCHIVE_DLQ"
	StreamMessages  = "MESSAGES"
	// StreamConflicts keeps records refused because their hash was stored
	// with other content: evidence for the operator, bounded (see Setup).
	StreamConflicts = "MESSAGE_CONFLICTS"
	// StreamPrune holds each community's pending prune schedule and the
	// prune events the server fires from it (SetupPrune).
	StreamPrune = "MESSAGES_PRUNE"

	ConsumerArchiver  = "archiver"
	ConsumerAnnouncer = "announcer"
	// ConsumerWaku is the Waku edge's durable consumer on StreamAnnounced:
	// it starts at new announcements (a first start does not replay the
	// stream's 30 days).
	ConsumerWaku = "waku"
	// ConsumerPruner is the message pruner's durable consumer, on
	// StreamBuilt (every committed build, to schedule its prune) and on
	// StreamPrune (the fired schedules).
	ConsumerPruner = "pruner"

	BucketCommunities = "communities"
	// BucketCommunityKeys holds each community's signing key (see
	// registry.Keys), apart from the registry every process reads: the
	// fleet's NATS permissions let only the announcer, which signs, and the
	// admin read it.
	BucketCommunityKeys = "community-keys"
	BucketState         = "community-state"
	BucketObjects       = "archive-objects"
	// BucketFailures counts each in-flight event's failures (not its
	// deliveries: snoozes come back without counting), keyed
	// "<consumer>.<stream seq>"; see Work.
	BucketFailures = "worker-failures"
	// BucketTrackerPeers holds the tracker's swarm, one key per peer of a
	// torrent, "<infohash hex>.<peer id>" (see internal/tracker).
	BucketTrackerPeers = "tracker-peers"
)

// FailuresMaxAge is how long a failure count outlives its last update: an
// event acked or dead-lettered deletes its key, so only orphans (an event
// purged by hand, say) ever reach it.
const FailuresMaxAge = 30 * 24 * time.Hour

// TrackerPeersTTL is how long a tracker peer outlives its last announce:
// three announce intervals (internal/tracker tells clients a third of it),
// so a peer that misses one announce is not forgotten, and one gone
// without a "stopped" leaves the swarm by itself.
const TrackerPeersTTL = 30 * time.Minute

// TrackerPeersMaxBytes bounds the tracker bucket, which shares the
// JetStream store with the archives. The tracker keeps announced peers
// within part of it (internal/tracker's caps); a write past it fails
// rather than evicting a seeder's registration.
const TrackerPeersMaxBytes = 64 << 20

// Subject builders.
func SubjectDue(c string) string       { return "archive.due." + c }
func SubjectBuilt(c string) string     { return "archive.built." + c }
func SubjectSeeding(c string) string   { return "archive.seeding." + c }
func SubjectRepublish(c string) string { return "archive.republish." + c }
func SubjectAnnounced(c string) string { return "archive.announced." + c }
func SubjectDLQ(kind string) string    { return "archive.dlq." + kind }

// SubjectPruneSchedule holds a community's pending prune: one JetStream
// message schedule ("@at"), fired by the server onto SubjectPruneDue.
func SubjectPruneSchedule(c string) string { return "archive.prune.schedule." + c }

// SubjectPruneDue is where the server publishes a community's prune event
// when its schedule comes due.
func SubjectPruneDue(c string) string { return "archive.prune.due." + c }

// SubjectConflict is where a record whose hash community c already stores
// with other content is kept as evidence; hash is its hex.
func SubjectConflict(c, hash string) string { return "conflicts." + c + "." + hash }

// Conflicts stream limits: a client sending forged records can fill it, not
// grow it. Old evidence goes first.
const (
	ConflictsMaxBytes = 256 << 20
	ConflictsPerHash  = 8
	ConflictsMaxAge   = 30 * 24 * time.Hour
)

// SubjectIngest is the core-NATS request subject for ingesting messages.
func SubjectIngest(c string) string { return "archive.ingest." + c }

// SubjectMessagesLegacy is where versions before per-message subjects kept a
// community's messages of one UTC day, as JSON; the store still reads them.
// Current records are on store.Subject.
func SubjectMessagesLegacy(c string, day uint64) string { return fmt.Sprintf("msgs.%s.%d", c, day) }

// Config tunes the topology. Zero values take the defaults in Setup.
type Config struct {
	// Replicas for streams and buckets (1 for a single server, 3 for a cluster).
	Replicas int
	// MessageRetention is how long ingested messages are kept; 0 keeps them
	// forever, as status-go does.
	MessageRetention time.Duration
	// DedupWindow is the Nats-Msg-Id window on event streams.
	DedupWindow time.Duration
	// AckWait is how long a worker may hold a message between heartbeats.
	AckWait time.Duration
	// MaxDeliver bounds the failures of one event before it is
	// dead-lettered. Snoozes (a handler waiting for a lock, say) and
	// redeliveries after an ack wait do not count: the workers count
	// failures themselves, and the consumers deliver without limit.
	// Negative: never dead-letter for failures.
	MaxDeliver int
	// Storage is file storage unless Memory is set (tests).
	Memory bool
	// Denials, if set, reports the permission violations the server sends
	// on the connection: a create or update this NATS user may not make
	// then fails at once with ErrTopologyDenied instead of waiting out its
	// request's timeout.
	Denials *Denials
}

func (c Config) withDefaults() Config {
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.DedupWindow == 0 {
		c.DedupWindow = 10 * time.Minute
	}
	if c.AckWait == 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = 20
	}
	return c
}

// Bus is a connected JetStream context with the fleet's topology in place.
type Bus struct {
	NC          *nats.Conn
	JS          jetstream.JetStream
	Communities jetstream.KeyValue
	// CommunityKeys holds the signing keys; only the announcer and the
	// admin may read it (a handle on it reads nothing without permission).
	CommunityKeys jetstream.KeyValue
	State         jetstream.KeyValue
	Objects       jetstream.ObjectStore
	// Failures holds the failure counts of events being retried.
	Failures jetstream.KeyValue
	// TrackerPeers is the tracker's swarm (keys expire after TrackerPeersTTL).
	TrackerPeers jetstream.KeyValue
	// Seeders and Serving are the placement buckets (see SeederBuckets).
	Seeders, Serving jetstream.KeyValue
	Config           Config
	// APIPrefix is the JetStream API prefix of Read and LeaderGet's
	// requests; empty is "$JS.API" (tests stand a responder in for a
	// stream under another).
	APIPrefix string
}

// Setup creates or updates every stream, consumer and bucket. It is
// idempotent: every service calls it at start-up. What it set up before
// with the same configuration it only reads (see SetupMetadataKey), so a
// user without the right to create streams (every service's in the shipped
// deployments) starts once the admin has run it (archivectl setup), and
// fails with ErrTopologyDenied when something is missing or out of date.
func Setup(ctx context.Context, nc *nats.Conn, cfg Config) (*Bus, error) {
	cfg = cfg.withDefaults()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	storage := jetstream.FileStorage
	if cfg.Memory {
		storage = jetstream.MemoryStorage
	}
	streams := []jetstream.StreamConfig{
		{Name: StreamDue, Subjects: []string{"archive.due.*"}, Retention: jetstream.WorkQueuePolicy},
		{Name: StreamBuilt, Subjects: []string{"archive.built.*"}, MaxMsgsPerSubject: 1},
		{Name: StreamSeeding, Subjects: []string{"archive.seeding.*", "archive.republish.*"}, Retention: jetstream.WorkQueuePolicy},
		{Name: StreamAnnounced, Subjects: []string{"archive.announced.*"}, MaxMsgsPerSubject: 16, MaxAge: 30 * 24 * time.Hour},
		{Name: StreamDLQ, Subjects: []string{"archive.dlq.>"}, MaxAge: 30 * 24 * time.Hour},
		// msgs.<c>.<day> holds records of earlier versions.
		// msgs.<c>.fence: builds' fences, each rolling up the one before.
		// Direct gets: reads by subject in batches, without a consumer
		// (Bus.Read).
		{Name: StreamMessages, Subjects: []string{"msgs.*.*", "msgs.*.*.*"}, MaxAge: cfg.MessageRetention, AllowRollup: true,
			AllowDirect: true},
		{Name: StreamConflicts, Subjects: []string{SubjectConflict("*", "*")}, MaxBytes: ConflictsMaxBytes,
			MaxMsgsPerSubject: ConflictsPerHash, MaxAge: ConflictsMaxAge, Discard: jetstream.DiscardOld},
	}
	for _, sc := range streams {
		sc.Storage, sc.Replicas, sc.Duplicates = storage, cfg.Replicas, cfg.DedupWindow
		if sc.MaxAge > 0 && sc.Duplicates > sc.MaxAge {
			sc.Duplicates = sc.MaxAge
		}
		if err := ensureStream(ctx, js, cfg.Denials, sc); err != nil {
			return nil, fmt.Errorf("stream %s: %w", sc.Name, err)
		}
	}
	// One mechanism decides when an event comes back: the worker, through
	// its Nak delays. A consumer BackOff list would override those delays
	// from the second delivery on, and the server's MaxDeliver counts every
	// delivery, snoozes included; so neither is set (an existing consumer
	// is updated to match), and the workers count failures in
	// BucketFailures against Config.MaxDeliver.
	consumers := []struct {
		stream string
		cfg    jetstream.ConsumerConfig
	}{
		{StreamDue, jetstream.ConsumerConfig{Durable: ConsumerArchiver}},
		{StreamSeeding, jetstream.ConsumerConfig{Durable: ConsumerAnnouncer}},
		{StreamAnnounced, jetstream.ConsumerConfig{Durable: ConsumerWaku, DeliverPolicy: jetstream.DeliverNewPolicy}},
	}
	for _, c := range consumers {
		c.cfg.AckPolicy = jetstream.AckExplicitPolicy
		c.cfg.AckWait = cfg.AckWait
		c.cfg.MaxDeliver = -1
		c.cfg.BackOff = nil
		c.cfg.MaxAckPending = 1000
		if err := ensureConsumer(ctx, js, cfg.Denials, c.stream, c.cfg); err != nil {
			return nil, fmt.Errorf("consumer %s: %w", c.cfg.Durable, err)
		}
	}
	b := &Bus{NC: nc, JS: js, Config: cfg}
	for _, kv := range []struct {
		to  *jetstream.KeyValue
		cfg jetstream.KeyValueConfig
	}{
		{&b.Communities, jetstream.KeyValueConfig{Bucket: BucketCommunities}},
		{&b.CommunityKeys, jetstream.KeyValueConfig{Bucket: BucketCommunityKeys}},
		{&b.State, jetstream.KeyValueConfig{Bucket: BucketState}},
		{&b.Failures, jetstream.KeyValueConfig{Bucket: BucketFailures, TTL: FailuresMaxAge}},
		{&b.TrackerPeers, jetstream.KeyValueConfig{Bucket: BucketTrackerPeers, TTL: TrackerPeersTTL, MaxBytes: TrackerPeersMaxBytes}},
		{&b.Seeders, jetstream.KeyValueConfig{Bucket: BucketSeeders, TTL: SeederTTL, LimitMarkerTTL: SeederTTL}},
		{&b.Serving, jetstream.KeyValueConfig{Bucket: BucketServing}},
	} {
		kv.cfg.Storage, kv.cfg.Replicas, kv.cfg.History = storage, cfg.Replicas, 1
		if *kv.to, err = ensureKeyValue(ctx, js, cfg.Denials, kv.cfg); err != nil {
			return nil, fmt.Errorf("bucket %s: %w", kv.cfg.Bucket, err)
		}
	}
	if b.Objects, err = ensureObjectStore(ctx, js, cfg.Denials, jetstream.ObjectStoreConfig{Bucket: BucketObjects, Storage: storage, Replicas: cfg.Replicas}); err != nil {
		return nil, fmt.Errorf("object store %s: %w", BucketObjects, err)
	}
	return b, nil
}

// Ready reports whether the connection is up and JetStream answers.
func (b *Bus) Ready(ctx context.Context) error {
	if !b.NC.IsConnected() {
		return errors.New("nats: not connected")
	}
	_, err := b.JS.AccountInfo(ctx)
	return err
}

// SetupPrune creates or updates the message pruner's topology: the
// StreamPrune work queue, which allows message schedules (nats-server 2.12 or
// later: an older server refuses the stream, and only the pruner fails), its
// ConsumerPruner on the fired events, and a ConsumerPruner on StreamBuilt
// that sees every committed build (a first start replays the last build of
// every community, so a deployment that kept every message is pruned once
// its grace has passed). Setup leaves all of it alone, so a fleet that keeps
// every message runs on any JetStream server. Idempotent.
func SetupPrune(ctx context.Context, b *Bus) error {
	cfg := b.Config.withDefaults()
	storage := jetstream.FileStorage
	if cfg.Memory {
		storage = jetstream.MemoryStorage
	}
	// Schedules fire onto archive.prune.due.<c> in the same stream (a
	// schedule's target must be); the work queue drops a fired event once
	// the pruner acks it, while the schedules, which no consumer takes,
	// stay until they fire (the server then removes them).
	if err := ensureStream(ctx, b.JS, cfg.Denials, jetstream.StreamConfig{Name: StreamPrune,
		Subjects: []string{SubjectPruneSchedule("*"), SubjectPruneDue("*")}, Retention: jetstream.WorkQueuePolicy,
		AllowMsgSchedules: true, AllowRollup: true, Storage: storage, Replicas: cfg.Replicas, Duplicates: cfg.DedupWindow}); err != nil {
		if errors.Is(err, ErrTopologyDenied) {
			return fmt.Errorf("stream %s: %w", StreamPrune, err)
		}
		return fmt.Errorf("stream %s (message schedules need nats-server 2.12 or later): %w", StreamPrune, err)
	}
	for _, c := range []struct {
		stream, filter string
	}{{StreamPrune, SubjectPruneDue("*")}, {StreamBuilt, SubjectBuilt("*")}} {
		if err := ensureConsumer(ctx, b.JS, cfg.Denials, c.stream, jetstream.ConsumerConfig{Durable: ConsumerPruner,
			FilterSubject: c.filter, AckPolicy: jetstream.AckExplicitPolicy, AckWait: cfg.AckWait, MaxDeliver: -1,
			MaxAckPending: 1000}); err != nil {
			return fmt.Errorf("consumer %s on %s: %w", ConsumerPruner, c.stream, err)
		}
	}
	return nil
}

// KeyMessagesLayout, in BucketState, records where MESSAGES' records of
// the current layout (one subject per community-day) begin: the stream
// sequence after the last record of earlier layouts. Readers look for
// records of those layouts only while the stream still holds records
// before it.
const KeyMessagesLayout = "messages-layout"

type messagesLayout struct {
	RecordsFrom uint64 `json:"recordsFrom"`
}

// EnsureMessagesLayout records, once, where this layout's records begin:
// after whatever MESSAGES holds when it first runs. The admin's set-up
// (archivectl setup), the all-in-one and the archiver call it at start;
// readers take a missing key for "records of earlier layouts may remain".
func EnsureMessagesLayout(ctx context.Context, b *Bus) error {
	if _, ok, err := MessagesLayout(ctx, b); ok || err != nil {
		return err
	}
	str, err := b.JS.Stream(ctx, StreamMessages)
	if err != nil {
		return err
	}
	v, _ := json.Marshal(messagesLayout{RecordsFrom: str.CachedInfo().State.LastSeq + 1})
	if _, err := b.State.Create(ctx, KeyMessagesLayout, v); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return err
	}
	return nil
}

// MessagesLayout returns where the current layout's records begin in
// MESSAGES, and false when that was never recorded.
func MessagesLayout(ctx context.Context, b *Bus) (uint64, bool, error) {
	e, err := RetryValue(ctx, func(ctx context.Context) (jetstream.KeyValueEntry, error) { return b.State.Get(ctx, KeyMessagesLayout) })
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("messages layout: %w", err)
	}
	var l messagesLayout
	if err := json.Unmarshal(e.Value(), &l); err != nil || l.RecordsFrom == 0 {
		return 0, false, fmt.Errorf("messages layout: unreadable %q", e.Value())
	}
	return l.RecordsFrom, true, nil
}
