package wakuedge

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/archivefleet/archivefleet/internal/testenv"
)

// TestLogSummary: the periodic summary says how many messages were heard,
// how many stored, and why the others were not (decrypt failures among
// them), then starts counting again.
func TestLogSummary(t *testing.T) {
	for _, tc := range []struct {
		name   string
		heard  int
		counts map[string]int
		want   []string
	}{
		{"quiet", 0, nil, []string{"level=INFO", "heard=0", "stored=0"}},
		{"mixed", 5, map[string]int{"stored": 2, "undecryptable": 1, "foreign": 1, "duplicate": 1},
			[]string{"level=INFO", "heard=5", "stored=2", "not_stored.duplicate=1", "not_stored.foreign=1", "not_stored.undecryptable=1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf testenv.Buffer
			s := &Service{Logger: slog.New(slog.NewTextHandler(&buf, nil)), tally: &tally{},
				received: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x"}, []string{"outcome"}),
				Config:   Config{SummaryEvery: time.Minute}}
			for range tc.heard {
				s.tally.hear()
			}
			for k, n := range tc.counts {
				s.count(k, n)
			}
			s.logSummary()
			for _, w := range tc.want {
				if !strings.Contains(buf.String(), w) {
					t.Errorf("summary %q lacks %s", buf.String(), w)
				}
			}
			if strings.Contains(buf.String(), "not_stored.stored") {
				t.Errorf("stored counted as not stored: %s", buf.String())
			}
			if h, o := s.tally.take(); h != 0 || len(o) != 0 {
				t.Errorf("counts not reset: %d %v", h, o)
			}
		})
	}
}
