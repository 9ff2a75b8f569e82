package bus_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/bus"
)

// TestUnavailable: one kind of failed read gets one answer in every worker.
func TestUnavailable(t *testing.T) {
	errSentinel := bus.Corrupt("stored thing is corrupt")
	var syntax error = &json.SyntaxError{}
	for _, tc := range []struct {
		name      string
		err       error
		permanent bool
	}{
		{"nats away", errors.New("nats: timeout"), false},
		{"corrupt sentinel", fmt.Errorf("x: %w", errSentinel), true},
		{"bus.ErrCorrupt", bus.ErrCorrupt, true},
		{"json that does not decode", fmt.Errorf("state x: %w", syntax), true},
		{"json type mismatch", fmt.Errorf("state x: %w", &json.UnmarshalTypeError{Value: "string"}), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := bus.Unavailable("state read", tc.err)
			if !strings.Contains(err.Error(), "state read") {
				t.Fatalf("%v does not say what failed", err)
			}
			if bus.IsPermanent(err) != tc.permanent {
				t.Fatalf("IsPermanent(%v) = %v, want %v", err, !tc.permanent, tc.permanent)
			}
			var s *bus.SnoozeError
			if isSnooze := errors.As(err, &s); isSnooze == tc.permanent {
				t.Fatalf("%v: snooze %v, want %v", err, isSnooze, !tc.permanent)
			}
			if tc.permanent && !errors.Is(err, tc.err) {
				t.Fatalf("%v lost its chain", err)
			}
			if s != nil && (s.Delay < bus.UnavailableSnooze/2 || s.Delay > bus.UnavailableSnooze) {
				t.Fatalf("snoozed %v, want within [%v, %v]", s.Delay, bus.UnavailableSnooze/2, bus.UnavailableSnooze)
			}
		})
	}
	if !errors.Is(errSentinel, errSentinel) || errSentinel.Error() != "stored thing is corrupt" || !bus.IsPermanent(errSentinel) {
		t.Fatalf("Corrupt sentinel: %v", errSentinel)
	}
}

// TestJitter: every wait is drawn from [d/2, d].
func TestJitter(t *testing.T) {
	for _, d := range []time.Duration{0, -time.Second, 1, time.Millisecond, 4 * time.Second} {
		for range 100 {
			got := bus.Jitter(d)
			if d <= 0 && got != 0 || d > 0 && (got < d/2 || got > d) {
				t.Fatalf("Jitter(%v) = %v", d, got)
			}
		}
	}
	var s *bus.SnoozeError
	if err := bus.SnoozeFor(time.Second, "wait"); !errors.As(err, &s) || s.Delay < time.Second/2 || s.Delay > time.Second {
		t.Fatalf("SnoozeFor: %v", err)
	}
}
