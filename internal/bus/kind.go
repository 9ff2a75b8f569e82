package bus

import (
	"context"
	"log/slog"
)

// Kind ties an event type to where it flows: the subject it is published
// on, the stream that holds it, the durable consumer its workers share, the
// dead-letter subject suffix and its name in errors. Each is declared once,
// below, beside the event types; workers register with one (Kind.Work), so
// no call site spells these names.
type Kind[T any] struct {
	// Subject is the event's subject for a community.
	Subject func(community string) string
	Stream  string
	// Consumer is the durable consumer on Stream the workers share.
	Consumer string
	// DeadLetter is the dead-letter subject suffix (SubjectDLQ).
	DeadLetter string
	// Event names the payload in errors ("decode due event: …").
	Event string
}

// The worker queues of the fleet.
var (
	// KindDue: the scheduler's (and archivectl's) due events, built by the
	// archiver.
	KindDue = Kind[DueEvent]{Subject: SubjectDue, Stream: StreamDue, Consumer: ConsumerArchiver,
		DeadLetter: "due", Event: "due event"}
	// KindSeeding: seeding-started events, announced by the announcer. The
	// scheduler's republish events (SubjectRepublish, a subset of
	// SeedingEvent) share the stream and the consumer.
	KindSeeding = Kind[SeedingEvent]{Subject: SubjectSeeding, Stream: StreamSeeding, Consumer: ConsumerAnnouncer,
		DeadLetter: "announce", Event: "event"}
	// KindAnnounced: the signed announcements, taken as they are (Raw, see
	// Announcement) by the Waku edge.
	KindAnnounced = Kind[Raw]{Subject: SubjectAnnounced, Stream: StreamAnnounced, Consumer: ConsumerWaku,
		DeadLetter: "waku", Event: "announcement"}
	// KindBuiltPrune: committed builds, whose prunes the pruner schedules.
	KindBuiltPrune = Kind[BuiltEvent]{Subject: SubjectBuilt, Stream: StreamBuilt, Consumer: ConsumerPruner,
		DeadLetter: "prune", Event: "archive-built event"}
	// KindPruneDue: the prune schedules the server fired, done by the
	// pruner.
	KindPruneDue = Kind[PruneEvent]{Subject: SubjectPruneDue, Stream: StreamPrune, Consumer: ConsumerPruner,
		DeadLetter: "prune", Event: "prune event"}
)

// Workers shapes the worker loops of one Kind in a process.
type Workers struct {
	Slots   int // concurrent events; each slot fetches one at a time
	Logger  *slog.Logger
	Metrics *WorkerMetrics // optional
}

// Work runs w.Slots workers on k's consumer (see the package function Work
// for how events are settled).
func (k Kind[T]) Work(ctx context.Context, b *Bus, w Workers, h func(ctx context.Context, ev T, d Delivery) error) error {
	return Work(ctx, b, WorkerConfig{Stream: k.Stream, Consumer: k.Consumer, Kind: k.DeadLetter, Event: k.Event,
		Slots: w.Slots, Logger: w.Logger, Metrics: w.Metrics}, h)
}
