package ctl

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// timeHelp describes what a time flag takes.
const timeHelp = `unix seconds, RFC 3339, "now" or "now-DURATION" (e.g. now-10m)`

// parseTime reads a point in time: unix seconds, RFC 3339, "now", or
// "now-DURATION" / "now+DURATION" (Go durations: 90s, 10m, 36h).
func parseTime(s string, now time.Time) (uint64, error) {
	s = strings.TrimSpace(s)
	if v, err := strconv.ParseUint(s, 10, 64); err == nil {
		return v, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil && t.Unix() >= 0 {
		return uint64(t.Unix()), nil
	}
	if rest, ok := strings.CutPrefix(s, "now"); ok {
		var d time.Duration
		if rest != "" {
			sign := rest[0]
			v, err := time.ParseDuration(rest[1:])
			if (sign != '-' && sign != '+') || err != nil || v < 0 {
				return 0, fmt.Errorf("%q: want %s", s, timeHelp)
			}
			d = v
			if sign == '-' {
				d = -v
			}
		}
		if t := now.Add(d); t.Unix() >= 0 {
			return uint64(t.Unix()), nil
		}
	}
	return 0, fmt.Errorf("%q: want %s", s, timeHelp)
}

// timeFlag is a flag holding a point in time (see parseTime), resolved when
// parsed.
type timeFlag struct {
	v   uint64
	set bool
	def string
}

func newTimeFlag(def string) *timeFlag {
	t := &timeFlag{def: def}
	if def != "" {
		t.v, _ = parseTime(def, time.Now())
	}
	return t
}

func (t *timeFlag) String() string {
	if t == nil {
		return ""
	}
	return t.def
}

func (t *timeFlag) Set(s string) error {
	v, err := parseTime(s, time.Now())
	if err != nil {
		return err
	}
	t.v, t.set = v, true
	return nil
}
