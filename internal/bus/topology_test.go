package bus_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// TestSetupLeavesTopologyAlone watches the JetStream API requests Setup
// sends (a plain subscriber on $JS.API.>): a first Setup creates
// everything; a second with the same configuration, as every service
// start is, creates and updates nothing (each update raced consumer
// creations in nats-server, see bus.SetupMetadataKey); a Setup with a
// changed setting updates only what that setting is part of, and the
// server then holds the new value.
func TestSetupLeavesTopologyAlone(t *testing.T) {
	ns := testenv.NATS(t)
	watch, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(watch.Close)
	// One channel for both subscriptions keeps the server's order: the
	// marker Setup's connection publishes last arrives after its requests.
	const done = "test.setup.done"
	seen := make(chan *nats.Msg, 10_000)
	for _, subj := range []string{"$JS.API.>", done} {
		if _, err := watch.ChanSubscribe(subj, seen); err != nil {
			t.Fatal(err)
		}
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	setup := func(cfg bus.Config) []string {
		t.Helper()
		b := testenv.Bus(t, ns, cfg)
		if _, _, err := b.SeederBuckets(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := bus.SetupPrune(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		if err := b.NC.Publish(done, nil); err != nil {
			t.Fatal(err)
		}
		b.NC.Flush()
		b.NC.Close()
		var writes []string
		for {
			select {
			case m := <-seen:
				if m.Subject == done {
					slices.Sort(writes)
					return writes
				}
				for _, op := range []string{".STREAM.CREATE.", ".STREAM.UPDATE.", ".CONSUMER.CREATE.", ".CONSUMER.DURABLE.CREATE."} {
					if strings.Contains(m.Subject, op) {
						writes = append(writes, strings.TrimPrefix(m.Subject, "$JS.API."))
					}
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Setup's requests did not all arrive")
			}
		}
	}
	cfg := bus.Config{}
	for _, tc := range []struct {
		name  string
		cfg   func(*bus.Config)
		check func(t *testing.T, writes []string)
	}{
		{"first", nil, func(t *testing.T, writes []string) {
			// 7 streams, 6 buckets and the object store; 5 durable consumers.
			if len(writes) < 19 {
				t.Fatalf("%d create/update requests, want at least 19: %v", len(writes), writes)
			}
		}},
		{"same configuration", nil, func(t *testing.T, writes []string) {
			if len(writes) != 0 {
				t.Fatalf("%d create/update requests, want none: %v", len(writes), writes)
			}
		}},
		{"message retention changed", func(c *bus.Config) { c.MessageRetention = 90 * 24 * time.Hour }, func(t *testing.T, writes []string) {
			if !slices.Equal(writes, []string{"STREAM.UPDATE." + bus.StreamMessages}) {
				t.Fatalf("requests %v, want only the update of %s", writes, bus.StreamMessages)
			}
			js, err := jetstream.New(watch)
			if err != nil {
				t.Fatal(err)
			}
			s, err := js.Stream(context.Background(), bus.StreamMessages)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.CachedInfo().Config.MaxAge; got != 90*24*time.Hour {
				t.Fatalf("%s max age %v after the update", bus.StreamMessages, got)
			}
		}},
		{"ack wait changed", func(c *bus.Config) { c.AckWait = 45 * time.Second }, func(t *testing.T, writes []string) {
			for _, w := range writes {
				if !strings.HasPrefix(w, "CONSUMER.") {
					t.Fatalf("requests %v, want only consumer updates", writes)
				}
			}
			if len(writes) != 5 {
				t.Fatalf("requests %v, want the 5 durable consumers updated", writes)
			}
		}},
	} {
		if tc.cfg != nil {
			tc.cfg(&cfg)
		}
		t.Run(tc.name, func(t *testing.T) { tc.check(t, setup(cfg)) })
	}
}
