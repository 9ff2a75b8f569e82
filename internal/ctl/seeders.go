package ctl

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/placement"
)

// seederTable is the live seeders and who serves what, for community list.
type seederTable struct {
	members []placement.Member
	serving placement.Serving
}

func readSeeders(ctx context.Context, b *bus.Bus) (*seederTable, error) {
	members, serving, err := b.SeederBuckets(ctx)
	if err != nil {
		return nil, err
	}
	ms, err := placement.ReadMembers(ctx, members)
	if err != nil {
		return nil, err
	}
	return &seederTable{members: ms, serving: placement.Serving{KV: serving}}, nil
}

// seeding is one community's seeders: the live ones serving its current
// torrent, and the ones it is placed on (they differ while a hand-off
// is under way or a new build is being fetched).
type seeding struct {
	Serving []string `json:"serving"`
	Placed  []string `json:"placed"`
}

func (t *seederTable) of(ctx context.Context, c, infohash string) (seeding, error) {
	s := seeding{Serving: []string{}, Placed: []string{}}
	got, err := t.serving.Seeders(ctx, c, t.members)
	if err != nil {
		return s, err
	}
	for id, ih := range got {
		if infohash != "" && ih == infohash {
			s.Serving = append(s.Serving, id)
		}
	}
	slices.Sort(s.Serving)
	for _, m := range placement.Owners(c, t.members, placement.FactorOf(t.members)) {
		s.Placed = append(s.Placed, m.ID)
	}
	slices.Sort(s.Placed)
	return s, nil
}

// String is the SEEDERS column: who serves the current torrent, and where
// it is going when that differs.
func (s seeding) String() string {
	if len(s.Placed) == 0 {
		return "-"
	}
	out := strings.Join(s.Serving, ",")
	if out == "" {
		out = "none"
	}
	if !slices.Equal(s.Serving, s.Placed) {
		out += " (placed on " + strings.Join(s.Placed, ",") + ")"
	}
	return out
}

// count is the narrow SEEDS column: seeders serving the current torrent
// of those it is placed on, e.g. "2/2"; "1/2" while a copy is on its way.
func (s seeding) count() string {
	if len(s.Placed) == 0 {
		return "-"
	}
	return fmt.Sprintf("%d/%d", len(s.Serving), len(s.Placed))
}
