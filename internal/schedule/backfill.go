package schedule

import (
	"context"
	"fmt"
	"time"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
)

// Backfill publishes, now, the due event of every given community whose
// window has closed, so queued work catches up without waiting for a
// scheduler tick. It returns the events published. No settle time:
// BackfillSettle(ctx, b, coms, now, 0).
func Backfill(ctx context.Context, b *bus.Bus, coms []*registry.Community, now time.Time) ([]bus.DueEvent, error) {
	return BackfillSettle(ctx, b, coms, now, 0)
}

// BackfillSettle is Backfill for windows that are due settle after their
// end (the scheduler's Config.Settle).
//
// Each event goes out under its own message id (BackfillMsgID), not the
// scheduler's: an operator re-runs a backfill after a window's event was
// dead-lettered, often within the stream's dedup window, where an event
// under the scheduler's id would be dropped as a duplicate of the dead one.
// A backfill of a window already built is a no-op for the archiver.
func BackfillSettle(ctx context.Context, b *bus.Bus, coms []*registry.Community, now time.Time, settle time.Duration) ([]bus.DueEvent, error) {
	st := &state.Store{KV: b.State}
	var out []bus.DueEvent
	for _, com := range coms {
		if com.Disabled {
			continue
		}
		c := com.ID.String()
		cur, _, err := st.GetBuild(ctx, c)
		if err != nil {
			return out, fmt.Errorf("%s: %w", c, err)
		}
		ev, ok := DueSettle(com, cur.LastEnd, now, settle)
		if !ok {
			continue
		}
		ev.Reason = "backfill"
		if _, err := b.Publish(ctx, bus.SubjectDue(c), BackfillMsgID(ev, now), ev); err != nil {
			return out, fmt.Errorf("%s: %w", c, err)
		}
		out = append(out, ev)
	}
	return out, nil
}

// BackfillMsgID is the message id of a backfill run at now: distinct from the
// scheduler's (ev.MsgID()) and from earlier runs.
func BackfillMsgID(ev bus.DueEvent, now time.Time) string {
	return fmt.Sprintf("backfill:%s:%d:%d", ev.Community, ev.End, now.UnixNano())
}
