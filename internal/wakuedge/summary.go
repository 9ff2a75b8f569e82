package wakuedge

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/archivefleet/archivefleet/internal/messages"
)

// DefaultSummaryEvery is how often the receiver logs, at INFO, what it
// heard: at the default level nothing else says the Waku side is alive
// until a window is built.
const DefaultSummaryEvery = time.Minute

// tally counts what the receiver heard since the last summary.
type tally struct {
	mu       sync.Mutex
	heard    int
	outcomes map[string]int
}

func (t *tally) hear() {
	t.mu.Lock()
	t.heard++
	t.mu.Unlock()
}

func (t *tally) add(outcome string, n int) {
	t.mu.Lock()
	if t.outcomes == nil {
		t.outcomes = map[string]int{}
	}
	t.outcomes[outcome] += n
	t.mu.Unlock()
}

// take returns the counts and starts again.
func (t *tally) take() (heard int, outcomes map[string]int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	heard, outcomes = t.heard, t.outcomes
	t.heard, t.outcomes = 0, nil
	return heard, outcomes
}

// count records n received messages with outcome, in the metric and in the
// next summary.
func (s *Service) count(outcome string, n int) {
	if n <= 0 {
		return
	}
	s.received.WithLabelValues(outcome).Add(float64(n))
	s.tally.add(outcome, n)
}

// logSummaries logs a summary every SummaryEvery until ctx ends.
func (s *Service) logSummaries(ctx context.Context) {
	t := time.NewTicker(s.Config.SummaryEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.logSummary()
		}
	}
}

// logSummary logs the messages heard since the last one: those stored
// (new), and every other outcome (duplicate, late, undecryptable,
// foreign…) as the reason they were not stored.
func (s *Service) logSummary() {
	heard, outcomes := s.tally.take()
	stored := outcomes[string(messages.Stored)]
	delete(outcomes, string(messages.Stored))
	var dropped []any
	for _, k := range slices.Sorted(maps.Keys(outcomes)) {
		dropped = append(dropped, slog.Int(k, outcomes[k]))
	}
	s.Logger.Info("waku messages heard", "every", s.Config.SummaryEvery, "heard", heard, "stored", stored,
		slog.Group("not_stored", dropped...))
}
