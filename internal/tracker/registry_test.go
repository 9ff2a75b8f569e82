package tracker

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

func testBus(t *testing.T) *bus.Bus {
	t.Helper()
	return testenv.Bus(t, testenv.NATS(t), bus.Config{Memory: true})
}

// clock steps one second per call, so registrations have distinct times.
func clock(r *Registry) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r.now = func() time.Time { at = at.Add(time.Second); return at }
}

func TestRegistry(t *testing.T) {
	ctx := context.Background()
	r := NewRegistry(testBus(t))
	clock(r)
	ih, other := [20]byte{1}, [20]byte{2}
	a1, a2, a6 := netip.MustParseAddrPort("10.0.0.1:6881"), netip.MustParseAddrPort("10.0.0.2:6881"), netip.MustParseAddrPort("[2001:db8::1]:51413")
	type reg struct {
		ih     [20]byte
		id     string
		addr   netip.AddrPort
		seeder bool
		remove bool
	}
	for _, tc := range []struct {
		name string
		regs []reg
		want []string // "id addr seeder" of Peers(ih), oldest first
	}{
		{name: "unknown torrent has no peers", want: nil},
		{name: "one seeder", regs: []reg{{ih, "seed-1", a1, true, false}}, want: []string{"seed-1 10.0.0.1:6881 true"}},
		{name: "a leecher joins, on another torrent too",
			regs: []reg{{ih, "aa", a2, false, false}, {other, "bb", netip.MustParseAddrPort("10.9.9.9:1"), false, false}},
			want: []string{"seed-1 10.0.0.1:6881 true", "aa 10.0.0.2:6881 false"}},
		{name: "IPv4-mapped is stored as IPv4; IPv6 kept",
			regs: []reg{{ih, "cc", netip.MustParseAddrPort("[::ffff:10.0.0.3]:7000"), false, false}, {ih, "dd", a6, false, false}},
			want: []string{"seed-1 10.0.0.1:6881 true", "aa 10.0.0.2:6881 false", "cc 10.0.0.3:7000 false", "dd [2001:db8::1]:51413 false"}},
		{name: "same address under a new id is one peer, the fresher",
			regs: []reg{{ih, "aa2", a2, true, false}},
			want: []string{"seed-1 10.0.0.1:6881 true", "cc 10.0.0.3:7000 false", "dd [2001:db8::1]:51413 false", "aa2 10.0.0.2:6881 true"}},
		{name: "removed peers leave",
			regs: []reg{{ih, "cc", netip.AddrPort{}, false, true}, {ih, "dd", netip.AddrPort{}, false, true}, {ih, "nobody", netip.AddrPort{}, false, true}},
			want: []string{"seed-1 10.0.0.1:6881 true", "aa2 10.0.0.2:6881 true"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, g := range tc.regs {
				var err error
				if g.remove {
					err = r.Remove(ctx, g.ih, g.id)
				} else {
					err = r.Register(ctx, g.ih, g.id, g.addr, g.seeder)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			peers, err := r.Peers(ctx, ih)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range peers {
				got = append(got, fmt.Sprintf("%s %s %v", p.ID, p.Addr, p.Seeder))
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("peers\n got %q\nwant %q", got, tc.want)
			}
			// One direct get answered, and the watcher (the fallback)
			// reads the same swarm.
			if _, err := r.peersDirect(ctx, ih); err != nil {
				t.Fatalf("direct get: %v", err)
			}
			watched, err := r.peersWatch(ctx, ih)
			if err != nil {
				t.Fatal(err)
			}
			if w := dedupe(watched); fmt.Sprint(w) != fmt.Sprint(peers) {
				t.Fatalf("watcher read %v, direct get %v", w, peers)
			}
		})
	}
}

func TestRegisterRejects(t *testing.T) {
	ctx := context.Background()
	r := NewRegistry(testBus(t))
	ok := netip.MustParseAddrPort("10.0.0.1:1")
	for _, tc := range []struct {
		name string
		id   string
		addr netip.AddrPort
	}{
		{"empty id", "", ok},
		{"dot in id (would leave the infohash's keys)", "a.b", ok},
		{"wildcard in id", "*", ok},
		{"long id", string(make([]byte, 65)), ok},
		{"no address", "x", netip.AddrPort{}},
		{"port 0", "x", netip.MustParseAddrPort("10.0.0.1:0")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := r.Register(ctx, [20]byte{}, tc.id, tc.addr, true); err == nil {
				t.Fatal("registered")
			}
		})
	}
	if err := r.Remove(ctx, [20]byte{}, "a.b"); !errors.Is(err, ErrBadID) {
		t.Fatalf("remove a.b: %v, want ErrBadID", err)
	}
}

// TestPeersBeyondDirectGetLimit fills a swarm past what one direct get
// returns (1024 keys): Peers falls back to a watcher and misses nobody.
func TestPeersBeyondDirectGetLimit(t *testing.T) {
	ctx := context.Background()
	r := NewRegistry(testBus(t))
	ih := [20]byte{7}
	const n = 1100
	for i := range n {
		addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 6881)
		if err := r.Register(ctx, ih, fmt.Sprintf("p%d", i), addr, i%2 == 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.peersDirect(ctx, ih); !errors.Is(err, errDirectUnavailable) {
		t.Fatalf("direct get of %d keys: %v, want errDirectUnavailable", n, err)
	}
	peers, err := r.Peers(ctx, ih)
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != n {
		t.Fatalf("%d peers, want %d", len(peers), n)
	}
}

// TestPeersExpire checks that a peer that stops announcing leaves with the
// bucket's TTL (a short one here; bus.TrackerPeersTTL in the fleet).
func TestPeersExpire(t *testing.T) {
	ctx := context.Background()
	b := testBus(t)
	kv, err := b.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "tracker-peers-short", History: 1, TTL: time.Second,
		Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	r := newRegistry(b.NC, kv)
	ih := [20]byte{3}
	if err := r.Register(ctx, ih, "x", netip.MustParseAddrPort("10.0.0.1:1"), true); err != nil {
		t.Fatal(err)
	}
	if peers, err := r.Peers(ctx, ih); err != nil || len(peers) != 1 {
		t.Fatalf("peers %v, %v; want the one registered", peers, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		peers, err := r.Peers(ctx, ih)
		if err != nil {
			t.Fatal(err)
		}
		if len(peers) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("peer still there 10 s after a 1 s TTL: %v", peers)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestBucketConfig: the bucket keeps a peer three announce intervals, one
// message per key, and at most bus.TrackerPeersMaxBytes, also when Setup
// finds it as an earlier version created it (without MaxBytes).
func TestBucketConfig(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		existing bool
	}{{"created", false}, {"an earlier version's, updated", true}} {
		t.Run(tc.name, func(t *testing.T) {
			s := testenv.NATS(t)
			if tc.existing {
				nc, err := nats.Connect(s.ClientURL())
				if err != nil {
					t.Fatal(err)
				}
				js, _ := jetstream.New(nc)
				if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bus.BucketTrackerPeers, History: 1,
					TTL: bus.TrackerPeersTTL, Storage: jetstream.MemoryStorage}); err != nil {
					t.Fatal(err)
				}
				nc.Close()
			}
			b := testenv.Bus(t, s, bus.Config{Memory: true})
			st, err := b.TrackerPeers.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			maxBytes := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.MaxBytes
			if st.TTL() != bus.TrackerPeersTTL || st.History() != 1 || DefaultInterval*3 != st.TTL() || maxBytes != bus.TrackerPeersMaxBytes {
				t.Fatalf("bucket TTL %v history %d max bytes %d; want %v (3 × %v), history 1, %d",
					st.TTL(), st.History(), maxBytes, bus.TrackerPeersTTL, DefaultInterval, bus.TrackerPeersMaxBytes)
			}
		})
	}
}
