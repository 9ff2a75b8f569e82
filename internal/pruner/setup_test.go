package pruner

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/messages"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// TestPrunerSetupRidesOutTransientErrors starts the pruner while its
// topology cannot be set up. On a three-node R3 cluster with two nodes down
// (no quorum: requests time out, then "JetStream system temporarily
// unavailable") it waits, logging so, and starts once the nodes are back,
// where it used to return the error and stop the archiver. A set-up error
// no repeat can fix (the prune subjects taken by another stream) still
// stops it at once.
func TestPrunerSetupRidesOutTransientErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cluster bool
		want    string // "started", or in Run's error
	}{
		{name: "cluster without a quorum, then back", cluster: true, want: "started"},
		{name: "subjects taken by another stream", want: "subjects overlap"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cluster && testing.Short() {
				t.Skip("cluster test")
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var b *bus.Bus
			heal := func() {}
			if tc.cluster {
				cl := testenv.NATSCluster(t)
				b = testenv.ClusterBus(t, cl, bus.Config{Replicas: testenv.ClusterSize})
				// Set-up finds what it set up before and only reads it
				// (bus.SetupMetadataKey), which a leader may answer without
				// a quorum: remove the prune stream so that it must create.
				if err := b.JS.DeleteStream(ctx, bus.StreamPrune); err != nil {
					t.Fatal(err)
				}
				heal = cl.LoseQuorum(t)
			} else {
				b = testenv.Bus(t, testenv.NATS(t), bus.Config{})
				if _, err := b.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "SQUATTER", Subjects: []string{bus.SubjectPruneDue("*")}}); err != nil {
					t.Fatal(err)
				}
			}
			var logs testenv.Buffer
			p := New(&messages.Store{Bus: b}, Config{Grace: time.Hour}, slog.New(slog.NewTextHandler(&logs, nil)), prometheus.NewRegistry())
			done := make(chan error, 1)
			t0 := time.Now()
			go func() { done <- p.Run(ctx) }()

			if tc.want != "started" {
				select {
				case err := <-done:
					if err == nil || !strings.Contains(err.Error(), tc.want) || bus.IsTransient(err) {
						t.Fatalf("Run: %v, want a non-transient error with %q", err, tc.want)
					}
					if took := time.Since(t0); took > 2*time.Second {
						t.Fatalf("Run failed after %v: the error was repeated", took)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("Run did not fail")
				}
				return
			}
			wait := func(what string, timeout time.Duration) {
				t.Helper()
				for deadline := time.Now().Add(timeout); !strings.Contains(logs.String(), what); time.Sleep(50 * time.Millisecond) {
					select {
					case err := <-done:
						t.Fatalf("Run returned %v while waiting for %q; log:\n%s", err, what, logs.String())
					default:
					}
					if time.Now().After(deadline) {
						t.Fatalf("no %q after %v; log:\n%s", what, timeout, logs.String())
					}
				}
			}
			wait("set-up failed on a transient NATS error", 30*time.Second)
			failedAt := time.Since(t0)
			heal()
			wait("message pruner started", 60*time.Second)
			t.Logf("FIGURES pruner set-up met transient errors for %v (two of three nodes down), started %v after the nodes came back",
				failedAt.Round(time.Millisecond), (time.Since(t0) - failedAt).Round(time.Millisecond))
			cancel()
			select {
			case err := <-done:
				if err != nil && !errors.Is(err, context.Canceled) {
					t.Fatalf("Run: %v after ctx ended, want nil", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("Run did not return after ctx ended")
			}
		})
	}
}
