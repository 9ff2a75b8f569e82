package scheduler

import (
	"testing"
	"time"
)

// TestConfigDefaults: a zero field is its default, a negative Republish
// turns republishing off, and what no default fixes is refused.
func TestConfigDefaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Config
		want Config
		err  bool
	}{
		{name: "zero", want: Config{Tick: DefaultTick, Republish: DefaultRepublish, RetryAfter: DefaultRetryAfter}},
		{name: "set", in: Config{Tick: 2 * time.Second, Republish: time.Hour, RetryAfter: 3 * time.Second, Settle: time.Second},
			want: Config{Tick: 2 * time.Second, Republish: time.Hour, RetryAfter: 3 * time.Second, Settle: time.Second}},
		{name: "republish off", in: Config{Republish: -1},
			want: Config{Tick: DefaultTick, Republish: -1, RetryAfter: DefaultRetryAfter}},
		{name: "negative tick", in: Config{Tick: -time.Second}, err: true},
		{name: "negative settle", in: Config{Settle: -time.Second}, err: true},
		{name: "republish under a second", in: Config{Republish: time.Millisecond}, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.in.withDefaults()
			if err := got.validate(); (err != nil) != tc.err {
				t.Fatalf("validate: %v, want error %v", err, tc.err)
			}
			if !tc.err && got != tc.want {
				t.Fatalf("withDefaults = %+v, want %+v", got, tc.want)
			}
		})
	}
}
