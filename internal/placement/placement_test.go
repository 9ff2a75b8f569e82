package placement

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

func members(ids ...string) []Member {
	out := make([]Member, len(ids))
	for i, id := range ids {
		out[i] = Member{ID: id, Addr: "127.0.0.1:" + fmt.Sprint(9000+i), Factor: 2}
	}
	return out
}

func communities(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("0x%066x", i*7919+1)
	}
	return out
}

func TestFactorDecode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Factor
		err  bool
	}{
		{"all", All, false}, {"ALL", All, false}, {"2", 2, false}, {" 3 ", 3, false},
		{"0", 0, true}, {"-1", 0, true}, {"two", 0, true}, {"", 0, true},
	} {
		var f Factor
		err := f.Decode(tc.in)
		if (err != nil) != tc.err || (err == nil && f != tc.want) {
			t.Errorf("Decode(%q) = %v, %v; want %v, error %v", tc.in, f, err, tc.want, tc.err)
		}
	}
	if All.String() != "all" || Factor(2).String() != "2" {
		t.Errorf("String: %q %q", All.String(), Factor(2).String())
	}
}

// TestOwnersSpread checks the acceptance numbers of the placement itself:
// 200 communities over 4 seeders at R = 2 give every seeder 100 ± 20, and a
// fifth seeder moves about a fifth of the 400 placements.
func TestOwnersSpread(t *testing.T) {
	four := members("seeder-1", "seeder-2", "seeder-3", "seeder-4")
	five := append(members("seeder-1", "seeder-2", "seeder-3", "seeder-4"), Member{ID: "seeder-5", Factor: 2})
	cs := communities(200)
	owned := map[string]int{}
	moved := 0
	for _, c := range cs {
		o4 := Owners(c, four, 2)
		if len(o4) != 2 || o4[0].ID == o4[1].ID {
			t.Fatalf("%s: owners %v", c, o4)
		}
		for _, m := range o4 {
			owned[m.ID]++
		}
		for _, m := range Owners(c, five, 2) {
			if !Owns(c, four, 2, m.ID) {
				moved++
			}
		}
	}
	for id, n := range owned {
		if n < 80 || n > 120 {
			t.Errorf("%s owns %d communities; want 100 ± 20", id, n)
		}
	}
	// Each placement moves to the newcomer with probability 1/5: 80 of 400
	// expected, σ ≈ 8.
	if moved < 56 || moved > 104 {
		t.Errorf("a fifth seeder moved %d of 400 placements; want about 80", moved)
	}
	t.Logf("owned %v; a fifth seeder moved %d of 400 placements", owned, moved)
}

func TestOwnersTable(t *testing.T) {
	ms := members("a", "b", "c")
	for _, tc := range []struct {
		name    string
		members []Member
		f       Factor
		want    int
	}{
		{"all", ms, All, 3},
		{"two of three", ms, 2, 2},
		{"more than members", ms, 5, 3},
		{"one member", ms[:1], 2, 1},
		{"none", nil, 2, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Owners("0x02aa", tc.members, tc.f)
			if len(got) != tc.want {
				t.Fatalf("%d owners, want %d", len(got), tc.want)
			}
			// The same members in another order give the same owners.
			rev := make([]Member, len(tc.members))
			for i, m := range tc.members {
				rev[len(rev)-1-i] = m
			}
			again := Owners("0x02aa", rev, tc.f)
			for i := range got {
				if got[i].ID != again[i].ID {
					t.Fatalf("order-dependent: %v vs %v", got, again)
				}
			}
		})
	}
}

func TestFactorOf(t *testing.T) {
	for _, tc := range []struct {
		fs   []Factor
		want Factor
	}{{nil, 1}, {[]Factor{2, 3}, 3}, {[]Factor{2, All}, All}} {
		var ms []Member
		for i, f := range tc.fs {
			ms = append(ms, Member{ID: fmt.Sprint(i), Factor: f})
		}
		if got := FactorOf(ms); got != tc.want {
			t.Errorf("FactorOf(%v) = %v, want %v", tc.fs, got, tc.want)
		}
	}
}

func TestWeightUniform(t *testing.T) {
	// The top bit of the weight should be set about half the time even for
	// inputs that differ in one trailing character.
	n, ones := 20000, 0
	for i := range n {
		if Weight("seeder-1", fmt.Sprintf("c%d", i))>>63 == 1 {
			ones++
		}
	}
	if d := math.Abs(float64(ones)/float64(n) - 0.5); d > 0.02 {
		t.Errorf("top bit set in %d of %d weights", ones, n)
	}
}

func TestKey(t *testing.T) {
	for in, want := range map[string]string{"seeder-1": "seeder-1", "host.example:9": "host-example-9", "a b": "a-b"} {
		if got := Key(in); got != want {
			t.Errorf("Key(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestMembership runs heartbeats and a view against a real NATS server: a
// member joins, one that stops writing expires (the watch hears the limit
// marker), and one that leaves gracefully is gone at once.
func TestMembership(t *testing.T) {
	s := testenv.NATS(t)
	b := testenv.Bus(t, s, bus.Config{Memory: true})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const ttl = 2 * time.Second
	kv, err := b.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "seeders-test", Storage: jetstream.MemoryStorage,
		History: 1, TTL: ttl, LimitMarkerTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	log := testenv.Logger()
	stopA, err := Heartbeat(ctx, kv, Member{ID: "a", Addr: "127.0.0.1:1", Factor: 2}, ttl/4, log)
	if err != nil {
		t.Fatal(err)
	}
	v, err := Watch(ctx, kv, log)
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Members(); len(got) != 1 || got[0].ID != "a" {
		t.Fatalf("members %v, want [a]", got)
	}
	waitMembers := func(want ...string) {
		t.Helper()
		deadline := time.Now().Add(3 * ttl)
		for {
			got := v.Members()
			ids := make([]string, len(got))
			for i, m := range got {
				ids[i] = m.ID
			}
			if fmt.Sprint(ids) == fmt.Sprint(want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("members %v, want %v", ids, want)
			}
			select {
			case <-v.Changes():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	// A member that writes once and never again (a killed seeder).
	if _, err := kv.Put(ctx, "dead", []byte(`{"id":"dead","factor":2}`)); err != nil {
		t.Fatal(err)
	}
	waitMembers("a", "dead")
	t0 := time.Now()
	waitMembers("a")
	if el := time.Since(t0); el > 2*ttl {
		t.Errorf("dead member gone after %v; TTL %v", el, ttl)
	}
	// "a" kept beating through all that; stopping it leaves its entry to
	// expire (a restart within the TTL keeps its place).
	stopA()
	if got := v.Members(); len(got) != 1 {
		t.Fatalf("members right after a stop: %v, want a still there", got)
	}
	waitMembers()
}

func TestServing(t *testing.T) {
	s := testenv.NATS(t)
	b := testenv.Bus(t, s, bus.Config{Memory: true})
	ctx := context.Background()
	_, kv, err := b.SeederBuckets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sv := Serving{KV: kv}
	c, c2 := "0x02ab", "0x02cd"
	ms := members("a", "b", "c")
	for i := range ms {
		ms[i].Since = time.Unix(1700000000, int64(i))
	}
	if err := sv.Set(ctx, c, ms[0], "ih1"); err != nil {
		t.Fatal(err)
	}
	if err := sv.Set(ctx, c, ms[1], "ih0"); err != nil {
		t.Fatal(err)
	}
	if err := sv.Set(ctx, c2, ms[1], "ih2"); err != nil {
		t.Fatal(err)
	}
	got, err := sv.Seeders(ctx, c, ms)
	if err != nil || got["a"] != "ih1" || got["b"] != "ih0" || len(got) != 2 {
		t.Fatalf("Seeders = %v, %v", got, err)
	}
	// Members not passed (not live) are not counted.
	if got, _ := sv.Seeders(ctx, c, ms[1:2]); len(got) != 1 {
		t.Fatalf("Seeders over [b] = %v", got)
	}
	// b restarted: a new incarnation serves nothing yet.
	b2 := ms[1]
	b2.Since = b2.Since.Add(time.Minute)
	if ih, _ := sv.Get(ctx, c, b2); ih != "" {
		t.Fatalf("a restarted seeder's old record reads %q", ih)
	}
	if err := sv.Set(ctx, c2, b2, "ih2"); err != nil {
		t.Fatal(err)
	}
	if n, err := sv.ClearStale(ctx, b2); err != nil || n != 1 {
		t.Fatalf("ClearStale = %d, %v; want the one record of the old incarnation", n, err)
	}
	if ih, _ := sv.Get(ctx, c2, b2); ih != "ih2" {
		t.Fatalf("ClearStale removed the current record (%q)", ih)
	}
	if err := sv.Clear(ctx, c, "a"); err != nil {
		t.Fatal(err)
	}
	if err := sv.Clear(ctx, c, "a"); err != nil {
		t.Fatalf("second Clear: %v", err)
	}
	if ih, _ := sv.Get(ctx, c, ms[0]); ih != "" {
		t.Fatalf("cleared record reads %q", ih)
	}
}
