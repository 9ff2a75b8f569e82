package fleet

import (
	"io"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// TestAllInOneTrackers: with its defaults the all-in-one serves the fleet
// tracker on loopback and puts it first in every magnet, followed by
// ARCHIVEFLEET_TRACKERS (default: status-go's; none; or a list).
func TestAllInOneTrackers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the all-in-one demo")
	}
	var statusGo []string
	for _, tier := range archive.DefaultAnnounceList {
		statusGo = append(statusGo, tier...)
	}
	for _, tc := range []struct {
		name, trackers string
		after          []string // after the fleet tracker
	}{
		{"default", "", statusGo},
		{"none", "none", nil},
		{"list", "http://tracker.example/announce", []string{"http://tracker.example/announce"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultAllInOneConfig()
			cfg.DataDir, cfg.NATSPort, cfg.HTTPAddr = t.TempDir(), testenv.FreePort(t), "127.0.0.1:0"
			cfg.DemoEvery, cfg.Tick, cfg.LogLevel, cfg.logOut = 2*time.Second, 100*time.Millisecond, "warn", io.Discard
			if tc.trackers != "" {
				cfg.Trackers = tc.trackers
			}
			ctx := startAllInOne(t, cfg)
			b := fleetBus(t, ctx, cfg)
			var magnet string
			for deadline := time.Now().Add(2 * time.Minute); magnet == ""; time.Sleep(100 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("no build of the demo community")
				}
				coms, err := registry.New(b.Communities).List(ctx)
				if err != nil || len(coms) != 1 {
					continue
				}
				bs, _, err := (&state.Store{KV: b.State}).GetBuild(ctx, coms[0].ID.String())
				if err == nil {
					magnet = bs.Magnet
				}
			}
			u, err := url.Parse(magnet)
			if err != nil {
				t.Fatal(err)
			}
			tr := u.Query()["tr"]
			if len(tr) == 0 || !strings.HasPrefix(tr[0], "http://127.0.0.1:") || !strings.HasSuffix(tr[0], "/announce") {
				t.Fatalf("first tr= of %s is not the fleet tracker on loopback", magnet)
			}
			if !slices.Equal(tr[1:], tc.after) {
				t.Fatalf("trackers after the fleet's: %q, want %q", tr[1:], tc.after)
			}
		})
	}
}
