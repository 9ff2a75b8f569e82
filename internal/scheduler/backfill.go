package scheduler

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
)

// BackfillOutcome is what Backfill did for one community.
type BackfillOutcome struct {
	Community *registry.Community
	// LastEnd is where its committed archives end.
	LastEnd uint64
	// Event is the due event published; nil when the community is disabled
	// or no window has closed (settled) since LastEnd.
	Event *bus.DueEvent
	// Duplicate: JetStream already held an event with the same id.
	Duplicate bool
}

// Backfill publishes, now, the due event of every given community whose
// window has closed (and settled), so queued work catches up without waiting
// for a scheduler tick: what `archivectl backfill` runs.
//
// Each event goes out under its own message id (OperatorMsgID), not the
// scheduler's: an operator re-runs a backfill after a window's event was
// dead-lettered, often within the stream's dedup window, where an event
// under the scheduler's id would be dropped as a duplicate of the dead one.
// A backfill of a window already built is a no-op for the archiver. On an
// error, the outcomes so far are returned with it.
func Backfill(ctx context.Context, b *bus.Bus, coms []*registry.Community, now time.Time, settle time.Duration) ([]BackfillOutcome, error) {
	st := &state.Store{KV: b.State}
	var out []BackfillOutcome
	for _, com := range coms {
		o := BackfillOutcome{Community: com}
		c := com.ID.String()
		cur, _, err := st.GetBuild(ctx, c)
		if err != nil {
			return out, fmt.Errorf("%s: %w", c, err)
		}
		o.LastEnd = cur.LastEnd
		if ev, ok := DueSettle(com, cur.LastEnd, now, settle); ok && !com.Disabled {
			ev.Reason = "backfill"
			ack, err := b.Publish(ctx, bus.SubjectDue(c), OperatorMsgID("backfill", ev, now), ev)
			if err != nil {
				return out, fmt.Errorf("%s: %w", c, err)
			}
			o.Event, o.Duplicate = &ev, ack.Duplicate
		}
		out = append(out, o)
	}
	return out, nil
}

// Published returns the events a backfill published.
func Published(outcomes []BackfillOutcome) []bus.DueEvent {
	var evs []bus.DueEvent
	for _, o := range outcomes {
		if o.Event != nil && !o.Duplicate {
			evs = append(evs, *o.Event)
		}
	}
	return evs
}

// OperatorMsgID is the message id of a due event an operator publishes
// (kind "backfill" or "trigger"): never the scheduler's deterministic
// ev.MsgID(), and never an earlier run's, so a re-run is not dropped as a
// duplicate within the stream's dedup window.
func OperatorMsgID(kind string, ev bus.DueEvent, now time.Time) string {
	var nonce [4]byte
	rand.Read(nonce[:])
	return fmt.Sprintf("%s:%s:%d:%d-%s", kind, ev.Community, ev.End, now.UnixNano(), hex.EncodeToString(nonce[:]))
}
