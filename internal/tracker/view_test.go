package tracker

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// putPeer applies a registration of id at addr to v, stored at.
func putPeer(t *testing.T, v *view, ih [20]byte, id string, rev uint64, at time.Time, addr netip.AddrPort, seeder bool) {
	t.Helper()
	b, err := encodePeer(addr, seeder, at)
	if err != nil {
		t.Fatal(err)
	}
	v.apply(ih, id, rev, at, false, b)
}

func addr4(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 6881)
}

func addr6(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)}), 6881)
}

// TestSample: an announce gets as many peers as it asks for (or all there
// are), each once, never itself, seeders first for a leecher and leechers
// first for a seeder, of the family asked for.
func TestSample(t *testing.T) {
	ih := [20]byte{1}
	at := time.Now()
	for _, tc := range []struct {
		name                   string
		seeders, leechers, six int // six: IPv6 leechers
		self                   int // index of the announcing peer among the leechers, -1: not stored
		seeder                 bool
		family, want           int
		wantSeeders, wantTotal int
	}{
		{name: "fewer than wanted: all, self left out", seeders: 3, leechers: 4, self: 0, want: 50, wantSeeders: 3, wantTotal: 6},
		{name: "leecher: seeders first", seeders: 30, leechers: 300, self: 5, want: 50, wantSeeders: 30, wantTotal: 50},
		{name: "leecher: seeders fill it", seeders: 300, leechers: 300, self: 5, want: 50, wantSeeders: 50, wantTotal: 50},
		{name: "seeder: leechers first", seeders: 300, leechers: 30, self: -1, seeder: true, want: 50, wantSeeders: 20, wantTotal: 50},
		{name: "not stored (over the cap): still answered", seeders: 2, leechers: 2000, self: -1, want: 200, wantSeeders: 2, wantTotal: 200},
		{name: "numwant 0", seeders: 2, leechers: 20, self: -1, want: 0},
		{name: "IPv4 only", seeders: 2, leechers: 20, six: 20, self: 3, family: 4, want: 50, wantSeeders: 2, wantTotal: 21},
		{name: "IPv6 only", seeders: 2, leechers: 20, six: 20, self: -1, family: 6, want: 50, wantSeeders: 0, wantTotal: 20},
		{name: "both families", seeders: 2, leechers: 20, six: 20, self: -1, want: 30, wantSeeders: 2, wantTotal: 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newView()
			seeders := map[netip.AddrPort]bool{}
			rev := uint64(0)
			for i := range tc.seeders {
				rev++
				a := addr4(100000 + i)
				seeders[a] = true
				putPeer(t, v, ih, fmt.Sprint("s", i), rev, at, a, true)
			}
			for i := range tc.leechers {
				rev++
				putPeer(t, v, ih, fmt.Sprint("l", i), rev, at, addr4(i), false)
			}
			for i := range tc.six {
				rev++
				putPeer(t, v, ih, fmt.Sprint("v6-", i), rev, at, addr6(i), false)
			}
			self := addr4(1 << 20)
			if tc.self >= 0 {
				self = addr4(tc.self)
			}
			for range 20 {
				got := v.swarms[ih].pick(self, tc.seeder, tc.family, tc.want)
				if len(got) != tc.wantTotal {
					t.Fatalf("%d peers, want %d", len(got), tc.wantTotal)
				}
				if len(slices.Compact(slices.SortedFunc(slices.Values(got), netip.AddrPort.Compare))) != len(got) {
					t.Fatalf("duplicates in %v", got)
				}
				nSeeders := 0
				for i, p := range got {
					switch {
					case p == self:
						t.Fatalf("itself in %v", got)
					case tc.family == 4 && !p.Addr().Is4(), tc.family == 6 && p.Addr().Is4():
						t.Fatalf("%v: family %d asked for", p, tc.family)
					case seeders[p]:
						nSeeders++
					}
					// The first group is one kind, then the other.
					if i > 0 && seeders[got[i-1]] != seeders[p] && seeders[p] != tc.seeder {
						t.Fatalf("kinds mixed: %v", got)
					}
				}
				if nSeeders != tc.wantSeeders {
					t.Fatalf("%d seeders, want %d", nSeeders, tc.wantSeeders)
				}
			}
		})
	}
}

// TestSampleRandom: a large swarm's peers are each returned about as often
// as any other, and in no fixed order.
func TestSampleRandom(t *testing.T) {
	v := newView()
	ih := [20]byte{1}
	const n, want, rounds = 100, 10, 2000
	for i := range n {
		putPeer(t, v, ih, fmt.Sprint("p", i), uint64(i+1), time.Now(), addr4(i), false)
	}
	picked, first := map[netip.AddrPort]int{}, map[netip.AddrPort]int{}
	for range rounds {
		got := v.swarms[ih].pick(addr4(1<<20), false, 0, want)
		first[got[0]]++
		for _, p := range got {
			picked[p]++
		}
	}
	// Each peer is expected want*rounds/n = 200 times (standard deviation
	// ~13): a peer outside 100..300 is no accident.
	for i := range n {
		if c := picked[addr4(i)]; c < 100 || c > 300 {
			t.Fatalf("peer %d picked %d times in %d rounds, expected ~%d", i, c, rounds, want*rounds/n)
		}
	}
	// Shuffled: the first place goes to nearly every peer (expected ~100
	// distinct; a fixed stratum order would give at most n/want).
	if len(first) < 80 {
		t.Fatalf("only %d distinct peers ever came first", len(first))
	}
}

// model is what the view should hold, recomputed by brute force.
type model map[string]struct {
	addr   netip.AddrPort
	seeder bool
	at     time.Time
	rev    uint64
}

func (m model) counts() (complete, incomplete int) {
	fresh := map[netip.AddrPort]struct {
		seeder bool
		at     time.Time
		rev    uint64
	}{}
	for _, e := range m {
		f, ok := fresh[e.addr]
		if !ok || e.at.After(f.at) || e.at.Equal(f.at) && e.rev > f.rev {
			fresh[e.addr] = struct {
				seeder bool
				at     time.Time
				rev    uint64
			}{e.seeder, e.at, e.rev}
		}
	}
	for _, f := range fresh {
		if f.seeder {
			complete++
		} else {
			incomplete++
		}
	}
	return complete, incomplete
}

// TestCounts: the counts kept as entries come and go (joins, leaves,
// seeders' completions, a second id at one address, expiry) are those a
// full recount gives, and the sampling lists stay consistent.
func TestCounts(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, seed))
			v := newView()
			v.ttl = time.Minute
			ih := [20]byte{9}
			m := model{}
			now := time.Unix(1_700_000_000, 0)
			rev := uint64(0)
			for step := range 3000 {
				now = now.Add(time.Duration(rng.IntN(100)) * time.Millisecond)
				id := fmt.Sprint("p", rng.IntN(60))
				if k := rng.IntN(60); k < 4 {
					id = fmt.Sprint(SeederIDPrefix, k) // a fleet seeder: opens the torrent
				}
				switch op := rng.IntN(10); {
				case op < 6: // announce: few addresses, so ids share them
					rev++
					a, s := addr4(rng.IntN(25)), rng.IntN(3) == 0
					putPeer(t, v, ih, id, rev, now, a, s)
					m[id] = struct {
						addr   netip.AddrPort
						seeder bool
						at     time.Time
						rev    uint64
					}{a, s, now, rev}
				case op < 8:
					rev++
					v.apply(ih, id, rev, now, true, nil)
					delete(m, id)
				case op < 9:
					v.markDeleted(ih, id) // the process's own delete, then the watch's
					rev++
					v.apply(ih, id, rev, now, true, nil)
					delete(m, id)
				default: // a revision already applied (the process's own write, back through the watch)
					if sw := v.swarms[ih]; sw != nil && sw.entries[id] != nil {
						putPeer(t, v, ih, id, sw.entries[id].rev, now, addr4(99), true)
					}
				}
				v.expire(now, -1)
				for id, e := range m {
					if now.Sub(e.at) >= v.ttl {
						delete(m, id)
					}
				}
				if served := b2i(v.allowed(ih) != nil); v.served != served {
					t.Fatalf("step %d: %d swarms served, want %d", step, v.served, served)
				}
				var c, i int
				if sw := v.swarms[ih]; sw != nil {
					c, i = sw.counts()
					checkLists(t, sw)
				}
				if mc, mi := m.counts(); c != mc || i != mi {
					t.Fatalf("step %d: counts %d/%d, recount %d/%d", step, c, i, mc, mi)
				}
			}
			v.expire(now.Add(time.Hour), -1)
			if len(v.swarms) != 0 || v.expiry.Len() != 0 || v.announced != 0 {
				t.Fatalf("after every entry expired: %d swarms, %d entries, %d announced", len(v.swarms), v.expiry.Len(), v.announced)
			}
		})
	}
}

// checkLists checks that every live entry's address is listed once, where
// its freshest entry says, at the index it records.
func checkLists(t *testing.T, sw *swarm) {
	t.Helper()
	n := 0
	for s := range 2 {
		for f := range 2 {
			for i, sl := range sw.peers[s][f] {
				n++
				if sl.idx != i || b2i(sl.seeder) != s || sw.addrs[sl.addr] != sl || len(sl.entries) == 0 {
					t.Fatalf("slot %v listed at [%d][%d][%d] is inconsistent: %+v", sl.addr, s, f, i, sl)
				}
			}
		}
	}
	if n != len(sw.addrs) {
		t.Fatalf("%d slots listed, %d addresses", n, len(sw.addrs))
	}
}

// TestExpireIncremental: entries leave ttl after they were stored, oldest
// first, at most limit per call, and a rewrite moves an entry's expiry.
func TestExpireIncremental(t *testing.T) {
	v := newView()
	v.ttl = 30 * time.Minute
	ih := [20]byte{4}
	t0 := time.Unix(1_700_000_000, 0)
	putPeer(t, v, ih, SeederIDPrefix+"x", 1, t0, addr4(0), true)
	for i := 1; i <= 9; i++ {
		putPeer(t, v, ih, fmt.Sprint("p", i), uint64(i+1), t0.Add(time.Duration(i)*time.Second), addr4(i), false)
	}
	putPeer(t, v, ih, "p1", 20, t0.Add(20*time.Second), addr4(1), false) // p1 announced again
	at := t0.Add(v.ttl + 4500*time.Millisecond)                          // the seeder and p2..p4 are due
	if n := v.expire(at, 2); n != 2 {
		t.Fatalf("expire with limit 2 dropped %d", n)
	}
	if n := v.expire(at, -1); n != 2 {
		t.Fatalf("expire dropped %d more, want 2", n)
	}
	if v.allowed(ih) != nil {
		t.Fatal("torrent still served after its seeder's registration expired")
	}
	sw := v.swarms[ih]
	var ids []string
	for id := range sw.entries {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	if fmt.Sprint(ids) != "[p1 p5 p6 p7 p8 p9]" || sw.announced != 6 || v.announced != 6 {
		t.Fatalf("left %v (%d announced), want p1 (rewritten) and p5..p9", ids, sw.announced)
	}
	if n := v.expire(t0.Add(time.Hour), -1); n != 6 || len(v.swarms) != 0 {
		t.Fatalf("an hour on: dropped %d, %d swarms left", n, len(v.swarms))
	}
}
