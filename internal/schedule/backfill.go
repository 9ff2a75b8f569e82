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
// scheduler tick. It returns the events published.
func Backfill(ctx context.Context, b *bus.Bus, coms []*registry.Community, now time.Time) ([]bus.DueEvent, error) {
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
		ev, ok := Due(com, cur.LastEnd, now)
		if !ok {
			continue
		}
		ev.Reason = "backfill"
		if _, err := b.Publish(ctx, bus.SubjectDue(c), ev.MsgID(), ev); err != nil {
			return out, fmt.Errorf("%s: %w", c, err)
		}
		out = append(out, ev)
	}
	return out, nil
}
