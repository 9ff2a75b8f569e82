package scheduler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
)

// Errors of Trigger.
var (
	ErrDisabled         = errors.New("community disabled")
	ErrNothingToArchive = errors.New("nothing to archive")
	ErrDuplicateEvent   = errors.New("duplicate: an identical trigger is already queued")
)

// Trigger publishes a due event archiving community id up to now, the open
// window included, as status-go's catch-up case does (to = now); later
// windows are anchored at the new end. What `archivectl trigger` and the
// console's trigger run.
func Trigger(ctx context.Context, b *bus.Bus, id archive.CommunityID, now time.Time) (bus.DueEvent, error) {
	com, err := registry.New(b.Communities).Get(ctx, id)
	if err != nil {
		return bus.DueEvent{}, err
	}
	if com.Disabled {
		return bus.DueEvent{}, fmt.Errorf("%s: %w", id, ErrDisabled)
	}
	cur, _, err := (&state.Store{KV: b.State}).GetBuild(ctx, id.String())
	if err != nil {
		return bus.DueEvent{}, err
	}
	from := com.NextStart(cur.LastEnd)
	end := uint64(now.Unix())
	if end <= from {
		return bus.DueEvent{From: from}, fmt.Errorf("%w: archived up to %s", ErrNothingToArchive, time.Unix(int64(from), 0).UTC().Format(time.RFC3339))
	}
	ev := bus.DueEvent{Community: id.String(), From: from, End: end, Reason: "trigger"}
	// Its own id: an operator's request must not vanish as a duplicate of a
	// scheduled event that happens to end at the same second, nor of an
	// earlier trigger.
	ack, err := b.Publish(ctx, bus.SubjectDue(ev.Community), OperatorMsgID("trigger", ev, now), ev)
	if err != nil {
		return ev, err
	}
	if ack.Duplicate {
		return ev, ErrDuplicateEvent
	}
	return ev, nil
}
