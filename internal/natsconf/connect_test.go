package natsconf

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// TestConnectRidesOutAnElection starts a service's connection while the
// cluster cannot answer: with two of three nodes down there is no meta
// leader, so the topology's set-up times out, then is refused as
// "temporarily unavailable". Connect waits, logging each attempt, and
// succeeds once the nodes are back, where it used to fail (and the service
// exit) at the first error. An error no repeat fixes (R3 on a single
// server) fails at once.
func TestConnectRidesOutAnElection(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cluster bool
		want    string // "" or in Connect's error
	}{
		{name: "cluster without a quorum, then back", cluster: true},
		{name: "three replicas on a single server", want: "replicas"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cluster && testing.Short() {
				t.Skip("cluster test")
			}
			c := DefaultCommon()
			c.Replicas = testenv.ClusterSize
			heal := func() {}
			if tc.cluster {
				cl := testenv.NATSCluster(t)
				c.NATSURL = cl.URLs()
				heal = cl.LoseQuorum(t)
			} else {
				c.NATSURL = testenv.NATS(t).ClientURL()
			}
			var logs testenv.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			type result struct {
				b   *bus.Bus
				err error
			}
			done := make(chan result, 1)
			t0 := time.Now()
			go func() {
				b, err := c.Connect(ctx, "test", log)
				done <- result{b, err}
			}()
			if tc.want != "" {
				r := <-done
				if r.err == nil || !strings.Contains(r.err.Error(), tc.want) || bus.IsTransient(r.err) {
					t.Fatalf("Connect: %v, want a non-transient error with %q", r.err, tc.want)
				}
				if took := time.Since(t0); took > 2*time.Second {
					t.Fatalf("Connect failed after %v: the error was repeated", took)
				}
				if strings.Contains(logs.String(), "retrying") {
					t.Fatalf("logged a retry:\n%s", logs.String())
				}
				return
			}
			for !strings.Contains(logs.String(), "failed on a transient error") {
				select {
				case r := <-done:
					t.Fatalf("Connect returned (%v) while the cluster had no quorum; log:\n%s", r.err, logs.String())
				case <-time.After(50 * time.Millisecond):
				}
			}
			failedAt := time.Since(t0)
			heal()
			r := <-done
			if r.err != nil {
				t.Fatalf("Connect: %v; log:\n%s", r.err, logs.String())
			}
			defer r.b.NC.Close()
			if !strings.Contains(logs.String(), "nats topology set up after transient errors") {
				t.Fatalf("log:\n%s", logs.String())
			}
			if _, err := r.b.State.Status(ctx); err != nil {
				t.Fatalf("state bucket: %v", err)
			}
			t.Logf("FIGURES Connect met transient errors for %v (two of three nodes down), connected %v after the nodes came back",
				failedAt.Round(time.Millisecond), (time.Since(t0) - failedAt).Round(time.Millisecond))
		})
	}
}
