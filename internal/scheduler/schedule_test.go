package scheduler

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
)

// TestNextDue covers status-go's three cases with whole windows, with and
// without a settle time: a window ending at E is due at E + settle, and the
// due event still names E, the largest anchor + k·interval with
// anchor + k·interval + settle <= now.
func TestNextDue(t *testing.T) {
	const iv = 7 * 24 * 3600
	const settle = 90 // seconds
	com := &registry.Community{Interval: registry.Duration(iv * time.Second), Since: 1000}
	tests := []struct {
		name    string
		settle  time.Duration
		lastEnd uint64
		now     int64
		at      int64
		end     uint64
	}{
		{"nothing archived, first window open", 0, 0, 1000 + iv - 1, 1000 + iv, 0},
		{"nothing archived, first window closed", 0, 0, 1000 + iv, 1000 + iv, 1000 + iv},
		{"younger than the interval: wait for the rest", 0, 5000, 5000 + iv/2, 5000 + iv, 0},
		{"older than the interval: catch up now", 0, 5000, 5000 + iv + 10, 5000 + iv, 5000 + iv},
		{"far behind: catch up whole windows only", 0, 5000, 5000 + 3*iv + 99, 5000 + iv, 5000 + 3*iv},

		{"settle: window closed, not settled", settle * time.Second, 0, 1000 + iv, 1000 + iv + settle, 0},
		{"settle: one second before settled", settle * time.Second, 0, 1000 + iv + settle - 1, 1000 + iv + settle, 0},
		{"settle: settled exactly", settle * time.Second, 0, 1000 + iv + settle, 1000 + iv + settle, 1000 + iv},
		{"settle: younger than the interval", settle * time.Second, 5000, 5000 + iv/2, 5000 + iv + settle, 0},
		{"settle: catch up, the newest closed window not settled", settle * time.Second, 5000, 5000 + 3*iv + settle - 1, 5000 + iv + settle, 5000 + 2*iv},
		{"settle: catch up, the newest window settled", settle * time.Second, 5000, 5000 + 3*iv + settle, 5000 + iv + settle, 5000 + 3*iv},
		{"settle longer than the interval", 2 * iv * time.Second, 5000, 5000 + 3*iv + 5, 5000 + 3*iv, 5000 + iv},
		{"sub-second settle: not due a second after the end", 1500 * time.Millisecond, 5000, 5000 + iv + 1, 5000 + iv + 1, 0},
		{"sub-second settle: due two seconds after the end", 1500 * time.Millisecond, 5000, 5000 + iv + 2, 5000 + iv + 1, 5000 + iv},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			at, end := NextDueSettle(com, tt.lastEnd, time.Unix(tt.now, 0), tt.settle)
			if at.Unix() != tt.at || end != tt.end {
				t.Fatalf("NextDueSettle = %d, %d; want %d, %d", at.Unix(), end, tt.at, tt.end)
			}
			if tt.settle == 0 {
				at0, end0 := NextDue(com, tt.lastEnd, time.Unix(tt.now, 0))
				if !at0.Equal(at) || end0 != end {
					t.Fatalf("NextDue = %d, %d; NextDueSettle with 0 = %d, %d", at0.Unix(), end0, at.Unix(), end)
				}
			}
			ev, ok := DueSettle(com, tt.lastEnd, time.Unix(tt.now, 0), tt.settle)
			if ok != (tt.end != 0) || ev.End != tt.end {
				t.Fatalf("DueSettle = %+v, %v; want end %d", ev, ok, tt.end)
			}
			if ok && (ev.End-com.NextStart(tt.lastEnd))%iv != 0 {
				t.Fatalf("due end %d is not a whole window after %d", ev.End, com.NextStart(tt.lastEnd))
			}
		})
	}
}

// TestSchedulerSettle drives the scheduler's heap with a pinned clock: a
// window is published only once its end plus Settle has passed, and the
// event names the window end.
func TestSchedulerSettle(t *testing.T) {
	const iv = 3600
	const settle = 2 * time.Minute
	tests := []struct {
		name    string
		settle  time.Duration
		advance time.Duration // after the window end
		want    uint64        // End published, 0: nothing
	}{
		{"no settle: due at the end", 0, 0, 1},
		{"settle: not at the end", settle, 0, 0},
		{"settle: not a second before", settle, settle - time.Second, 0},
		{"settle: due once settled", settle, settle, 1},
		{"settle: a second window closed, unsettled", settle, iv*time.Second + settle - time.Second, 1},
		{"settle: two windows settled", settle, iv*time.Second + settle, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const since = 1_800_000_000
			now := time.Unix(since, 0)
			var got []bus.DueEvent
			s := New(Service{Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return now },
				Config: Config{Settle: tt.settle, RetryAfter: time.Hour},
				Publish: func(_ context.Context, _, _ string, v any) (bool, error) {
					if ev, ok := v.(bus.DueEvent); ok {
						got = append(got, ev)
					}
					return false, nil
				}}, prometheus.NewRegistry())
			key, _ := secp256k1.GeneratePrivateKey()
			var id archive.CommunityID
			copy(id[:], key.PubKey().SerializeCompressed())
			com := registry.Community{ID: id, Interval: registry.Duration(iv * time.Second), Since: since}
			raw, _ := json.Marshal(com)
			s.onCommunity(id.String(), raw, false)
			st, _ := json.Marshal(state.Build{})
			s.onState(id.String(), st, false)
			now = time.Unix(since+iv, 0).Add(tt.advance)
			s.fire(context.Background())
			switch {
			case tt.want == 0 && len(got) != 0:
				t.Fatalf("published %+v before the window settled", got)
			case tt.want != 0 && (len(got) != 1 || got[0].End != since+tt.want*iv):
				t.Fatalf("published %+v; want one event ending at %d", got, since+tt.want*iv)
			}
		})
	}
}
