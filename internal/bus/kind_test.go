package bus_test

import (
	"context"
	"slices"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// TestKinds: each worker queue's subject lands in its stream, and its
// consumer exists there once the topology is set up.
func TestKinds(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{Memory: true})
	ctx := context.Background()
	if err := bus.SetupPrune(ctx, b); err != nil {
		t.Fatal(err)
	}
	type row struct {
		name, stream, consumer, deadLetter string
		subject                            func(string) string
	}
	for _, k := range []row{
		{"due", bus.KindDue.Stream, bus.KindDue.Consumer, bus.KindDue.DeadLetter, bus.KindDue.Subject},
		{"seeding", bus.KindSeeding.Stream, bus.KindSeeding.Consumer, bus.KindSeeding.DeadLetter, bus.KindSeeding.Subject},
		{"announced", bus.KindAnnounced.Stream, bus.KindAnnounced.Consumer, bus.KindAnnounced.DeadLetter, bus.KindAnnounced.Subject},
		{"built, to prune", bus.KindBuiltPrune.Stream, bus.KindBuiltPrune.Consumer, bus.KindBuiltPrune.DeadLetter, bus.KindBuiltPrune.Subject},
		{"prune due", bus.KindPruneDue.Stream, bus.KindPruneDue.Consumer, bus.KindPruneDue.DeadLetter, bus.KindPruneDue.Subject},
	} {
		t.Run(k.name, func(t *testing.T) {
			if k.deadLetter == "" {
				t.Fatal("no dead-letter kind")
			}
			str, err := b.JS.Stream(ctx, k.stream)
			if err != nil {
				t.Fatalf("stream %s: %v", k.stream, err)
			}
			subj := k.subject("0x02aa")
			if !slices.ContainsFunc(str.CachedInfo().Config.Subjects, func(f string) bool { return server.SubjectMatchesFilter(subj, f) }) {
				t.Fatalf("%s is not in stream %s (%v)", subj, k.stream, str.CachedInfo().Config.Subjects)
			}
			if _, err := b.JS.Consumer(ctx, k.stream, k.consumer); err != nil {
				t.Fatalf("consumer %s on %s: %v", k.consumer, k.stream, err)
			}
		})
	}
}
