// Package placement decides which seeders seed which community.
//
// Every live seeder is a member: a key in bus.BucketSeeders that its
// heartbeat rewrites and that expires (with a limit marker watchers see)
// when the seeder stops. A community's owners are the R members with the
// highest rendezvous (highest-random-weight) weight for it, so every
// process that sees the same members computes the same owners without
// talking to the others, and a member joining or leaving moves only the
// placements it wins or held: about R/N of them.
//
// Hand-offs are make-before-break: a seeder that stops owning a community
// keeps seeding it until every new owner records, in bus.BucketServing,
// that it serves the community's current torrent.
package placement

import (
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Member is a live seeder as its heartbeat describes it.
type Member struct {
	ID string `json:"id"`
	// Addr is the host:port members of the community dial (x.pe).
	Addr string `json:"addr,omitempty"`
	// Factor is the replication factor the seeder places by (0: all), so
	// that other services compute the same owners without a setting of
	// their own.
	Factor Factor    `json:"factor"`
	Since  time.Time `json:"since"`
}

// Factor is how many seeders seed each community; All (0) means every
// seeder seeds every community.
type Factor int

// All places every community on every seeder.
const All Factor = 0

// Decode parses "all" or a positive count (envconfig.Decoder).
func (f *Factor) Decode(s string) error {
	if strings.EqualFold(strings.TrimSpace(s), "all") {
		*f = All
		return nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 {
		return fmt.Errorf("replication factor %q: want a positive count or \"all\"", s)
	}
	*f = Factor(n)
	return nil
}

// String is the setting's text form.
func (f Factor) String() string {
	if f <= All {
		return "all"
	}
	return strconv.Itoa(int(f))
}

// Weight is member's rendezvous weight for community.
func Weight(member, community string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(member))
	h.Write([]byte{0})
	h.Write([]byte(community))
	// FNV's low bits mix poorly for inputs that differ only at the end;
	// splitmix64's finaliser spreads them.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Owners returns the members that seed community under factor f, highest
// weight first (every member, in that order, under All).
func Owners(community string, members []Member, f Factor) []Member {
	type scored struct {
		m Member
		w uint64
	}
	s := make([]scored, len(members))
	for i, m := range members {
		s[i] = scored{m, Weight(m.ID, community)}
	}
	slices.SortFunc(s, func(a, b scored) int {
		if a.w != b.w {
			if a.w > b.w {
				return -1
			}
			return 1
		}
		return strings.Compare(a.m.ID, b.m.ID)
	})
	n := len(s)
	if f > All && int(f) < n {
		n = int(f)
	}
	out := make([]Member, n)
	for i := range out {
		out[i] = s[i].m
	}
	return out
}

// Owns reports whether id is among community's owners.
func Owns(community string, members []Member, f Factor, id string) bool {
	return slices.ContainsFunc(Owners(community, members, f), func(m Member) bool { return m.ID == id })
}

// FactorOf is the factor the members place by: the largest any of them
// states (All if any says All), so a reader errs towards more copies while
// a rolling change of the setting is under way.
func FactorOf(members []Member) Factor {
	f := Factor(1)
	for _, m := range members {
		if m.Factor <= All {
			return All
		}
		f = max(f, m.Factor)
	}
	return f
}

// Key turns a seeder id into one KV key token: anything outside
// [A-Za-z0-9_=-] becomes '-', and it is cut to 64 bytes.
func Key(id string) string {
	k := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '=':
			return r
		}
		return '-'
	}, id)
	return k[:min(len(k), 64)]
}
