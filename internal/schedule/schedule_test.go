package schedule

import (
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/registry"
)

// TestNextDue covers status-go's three cases with whole windows.
func TestNextDue(t *testing.T) {
	const iv = 7 * 24 * 3600
	com := &registry.Community{Interval: registry.Duration(iv * time.Second), Since: 1000}
	tests := []struct {
		name    string
		lastEnd uint64
		now     int64
		at      int64
		end     uint64
	}{
		{"nothing archived, first window open", 0, 1000 + iv - 1, 1000 + iv, 0},
		{"nothing archived, first window closed", 0, 1000 + iv, 1000 + iv, 1000 + iv},
		{"younger than the interval: wait for the rest", 5000, 5000 + iv/2, 5000 + iv, 0},
		{"older than the interval: catch up now", 5000, 5000 + iv + 10, 5000 + iv, 5000 + iv},
		{"far behind: catch up whole windows only", 5000, 5000 + 3*iv + 99, 5000 + iv, 5000 + 3*iv},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			at, end := NextDue(com, tt.lastEnd, time.Unix(tt.now, 0))
			if at.Unix() != tt.at || end != tt.end {
				t.Fatalf("NextDue = %d, %d; want %d, %d", at.Unix(), end, tt.at, tt.end)
			}
		})
	}
}
