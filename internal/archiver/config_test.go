package archiver

import (
	"testing"
	"time"
)

// TestConfigDefaults: a zero field is its default; negatives are refused.
func TestConfigDefaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Config
		want Config
		err  bool
	}{
		{name: "zero", want: Config{Slots: DefaultSlots, LockTTL: DefaultLockTTL}},
		{name: "set", in: Config{Slots: 3, LockTTL: time.Minute, Settle: time.Second}, want: Config{Slots: 3, LockTTL: time.Minute, Settle: time.Second}},
		{name: "negative slots", in: Config{Slots: -1}, err: true},
		{name: "negative lock TTL", in: Config{LockTTL: -time.Second}, err: true},
		{name: "negative settle", in: Config{Settle: -time.Second}, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.in.withDefaults()
			if err := got.validate(); (err != nil) != tc.err {
				t.Fatalf("validate: %v, want error %v", err, tc.err)
			}
			if !tc.err && (got.Slots != tc.want.Slots || got.LockTTL != tc.want.LockTTL || got.Settle != tc.want.Settle) {
				t.Fatalf("withDefaults = %+v, want %+v", got, tc.want)
			}
		})
	}
}
