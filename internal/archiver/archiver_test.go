package archiver

import (
	"context"
	"strings"
	"testing"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// TestCommitIsFenced checks the compare-and-set commit: a build holding an
// older fence, or built on a base that moved, cannot commit.
func TestCommitIsFenced(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	st := &state.Store{KV: b.State}
	s := &Service{Bus: b, State: st}
	ctx := context.Background()
	const c = "0x02cfca2ca218f099107c5d4b61cb17bd6566137dbecf7e4557984c882a16accd87"
	base := &state.Build{}
	first := &state.Build{LastEnd: 100, Fence: 5, InfoHash: "aa"}
	if err := s.commit(ctx, c, base, first); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		base *state.Build
		next *state.Build
		want string
	}{
		{"stale fence", first, &state.Build{LastEnd: 200, Fence: 4}, "fence"},
		{"same fence", first, &state.Build{LastEnd: 200, Fence: 5}, "fence"},
		{"moved base", base, &state.Build{LastEnd: 200, Fence: 9}, "moved"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.commit(ctx, c, tt.base, tt.next)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("commit: %v, want a %q rejection", err, tt.want)
			}
		})
	}
	if err := s.commit(ctx, c, first, &state.Build{LastEnd: 200, Fence: 6, InfoHash: "bb"}); err != nil {
		t.Fatalf("newer fence on the current base: %v", err)
	}
	got, _, _ := st.GetBuild(ctx, c)
	if got.LastEnd != 200 || got.Fence != 6 {
		t.Fatalf("state %+v", got)
	}
}
