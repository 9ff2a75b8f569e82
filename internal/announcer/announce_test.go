package announcer

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// ih is the infohash of the build committed helpers put in the state.
const ih = "5ba51fec45a6e521db60b2e33dbabeb61308fdfa"

// committed registers an hourly community and commits a build of ih for it.
func committed(t *testing.T, b *bus.Bus) (*registry.Community, *state.Store) {
	t.Helper()
	ctx := context.Background()
	key := fixture.Key()
	com := fixture.CommunityFromKey(key, time.Hour, 0, archive.Topic{1})
	if _, err := registry.NewKeys(b.CommunityKeys).Put(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := registry.New(b.Communities).Put(ctx, com); err != nil {
		t.Fatal(err)
	}
	st := &state.Store{KV: b.State}
	if _, err := st.Put(ctx, com.ID.String(), &state.Build{LastEnd: 10, InfoHash: ih, Magnet: "magnet:?xt=urn:btih:" + ih}, 0); err != nil {
		t.Fatal(err)
	}
	return com, st
}

type capture struct{ sent []*bus.Announcement }

func (c *capture) Send(_ context.Context, a *bus.Announcement) error {
	c.sent = append(c.sent, a)
	return nil
}

// TestClockOnlyGrows announces while the wall clock jumps backwards: every
// announcement still carries a larger clock than the last.
func TestClockOnlyGrows(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	ctx := context.Background()
	com, st := committed(t, b)
	now := time.Unix(1_800_000_000, 0)
	tr := &capture{}
	s := New(Service{Bus: b, Registry: registry.New(b.Communities), Keys: registry.NewKeys(b.CommunityKeys), State: st, Transports: []Transport{tr},
		Now: func() time.Time { return now }}, prometheus.NewRegistry())
	if err := s.announce(ctx, com.ID, "seeded", ih, "127.0.0.1:9025"); err != nil {
		t.Fatal(err)
	}
	for _, jump := range []time.Duration{-time.Hour, -24 * time.Hour, time.Millisecond} {
		now = now.Add(jump)
		if err := s.announce(ctx, com.ID, "republish", ih, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.announce(ctx, com.ID, "seeded", ih, "127.0.0.1:9025"); err != errSkip {
		t.Fatalf("second seeded event for the same torrent: %v, want a skip", err)
	}
	for i := 1; i < len(tr.sent); i++ {
		if tr.sent[i].Clock <= tr.sent[i-1].Clock {
			t.Fatalf("clock went from %d to %d", tr.sent[i-1].Clock, tr.sent[i].Clock)
		}
		if tr.sent[i].Magnet != tr.sent[0].Magnet {
			t.Fatalf("republished a different link: %s", tr.sent[i].Magnet)
		}
	}
	if len(tr.sent) != 4 {
		t.Fatalf("sent %d announcements, want 4", len(tr.sent))
	}
}

type failing struct{}

func (failing) Send(context.Context, *bus.Announcement) error {
	return errors.New("webhook answered 503")
}

// TestHandleOutcomes: NATS unreachable snoozes (it is waiting, not
// failing), a malformed event dead-letters at once, a transport that fails
// is a failure that counts toward MAX_DELIVER.
func TestHandleOutcomes(t *testing.T) {
	ns := testenv.NATS(t)
	b := testenv.Bus(t, ns, bus.Config{})
	ctx := context.Background()
	com, st := committed(t, b)
	kv := testenv.ClosedBucket(t, ns, bus.BucketCommunities) // NATS unreachable
	keysKV := testenv.ClosedBucket(t, ns, bus.BucketCommunityKeys)
	keyless := fixture.Community(time.Hour, 0, archive.Topic{1})
	if err := registry.New(b.Communities).Put(ctx, keyless); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, keyless.ID.String(), &state.Build{LastEnd: 10, InfoHash: ih, Magnet: "magnet:?xt=urn:btih:" + ih}, 0); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		registry  *registry.Registry
		keys      *registry.Keys
		transport Transport
		community string
		outcome   string // ack, snooze, permanent, failure
		want      string
	}{
		{name: "invalid community id", community: "0xZZ", outcome: "permanent", want: "invalid community id"},
		{name: "registry unreachable", registry: registry.New(kv), outcome: "snooze", want: "registry read"},
		{name: "keys unreachable", keys: registry.NewKeys(keysKV), transport: &capture{}, outcome: "snooze", want: "signing key read"},
		{name: "no key stored", community: keyless.ID.String(), transport: &capture{}, outcome: "failure", want: "community add"},
		{name: "transport fails", transport: failing{}, outcome: "failure", want: "503"},
		{name: "sent", transport: &capture{}, outcome: "ack"},
		{name: "sent already: skipped", transport: &capture{}, outcome: "ack"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, keys := registry.New(b.Communities), registry.NewKeys(b.CommunityKeys)
			if tt.registry != nil {
				r = tt.registry
			}
			if tt.keys != nil {
				keys = tt.keys
			}
			s := New(Service{Bus: b, Registry: r, Keys: keys, State: st, Transports: []Transport{tt.transport}, Logger: testenv.Logger()}, prometheus.NewRegistry())
			c := com.ID.String()
			if tt.community != "" {
				c = tt.community
			}
			err := s.handle(ctx, bus.SeedingEvent{Community: c, InfoHash: ih, Seeder: "s"}, bus.Delivery{Subject: bus.SubjectSeeding(c), Deliveries: 1})
			var snooze *bus.SnoozeError
			isSnooze := errors.As(err, &snooze)
			ok := map[string]bool{
				"ack":       err == nil,
				"snooze":    isSnooze,
				"permanent": bus.IsPermanent(err),
				"failure":   err != nil && !isSnooze && !bus.IsPermanent(err),
			}[tt.outcome]
			if !ok || (tt.want != "" && !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("err %v, want %s with %q", err, tt.outcome, tt.want)
			}
		})
	}
}

type seeders []string

func (s *seeders) Addrs(string) []string { return *s }

// TestPeersOfEveryOwner: an announcement's x.pe lists every seeder the
// community is placed on (each once, the event's seeder included), and a
// republish after the placement moved lists the new owners.
func TestPeersOfEveryOwner(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	ctx := context.Background()
	com, st := committed(t, b)
	tr := &capture{}
	owners := seeders{"10.0.0.1:9025", "10.0.0.2:9025"}
	s := New(Service{Bus: b, Registry: registry.New(b.Communities), Keys: registry.NewKeys(b.CommunityKeys), State: st, Transports: []Transport{tr}, Seeders: &owners},
		prometheus.NewRegistry())
	if err := s.announce(ctx, com.ID, "seeded", ih, "10.0.0.2:9025"); err != nil {
		t.Fatal(err)
	}
	owners = seeders{"10.0.0.2:9025", "10.0.0.3:9025"}
	if err := s.announce(ctx, com.ID, "republish", ih, ""); err != nil {
		t.Fatal(err)
	}
	for i, want := range [][]string{{"10.0.0.1:9025", "10.0.0.2:9025"}, {"10.0.0.2:9025", "10.0.0.3:9025"}} {
		got := strings.Count(tr.sent[i].Magnet, "x.pe=")
		for _, p := range want {
			if strings.Count(tr.sent[i].Magnet, "x.pe="+url.QueryEscape(p)) != 1 {
				t.Fatalf("announcement %d: %s lacks x.pe=%s once", i, tr.sent[i].Magnet, p)
			}
		}
		if got != len(want) {
			t.Fatalf("announcement %d: %d x.pe in %s, want %d", i, got, tr.sent[i].Magnet, len(want))
		}
	}
}

// TestSigningKeyOutOfTheRegistry: the announcer signs with the key in the
// keys bucket; a community an earlier version registered with its key in
// the registry entry is still announced, with the key from there and one
// warning, until MoveSigningKeys (archivectl setup) moves it, after which
// the entry no longer holds it and announcements go on.
func TestSigningKeyOutOfTheRegistry(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	ctx := context.Background()
	com, st := committed(t, b)
	var logs testenv.Buffer
	tr := &capture{}
	reg, keys := registry.New(b.Communities), registry.NewKeys(b.CommunityKeys)
	s := New(Service{Bus: b, Registry: reg, Keys: keys, State: st, Transports: []Transport{tr},
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}, prometheus.NewRegistry())
	if err := s.announce(ctx, com.ID, "seeded", ih, ""); err != nil {
		t.Fatal(err)
	}
	if v, err := Verify(tr.sent[0].Message); err != nil || v.Community != com.ID {
		t.Fatalf("announcement signed by %v (%v), want %s", v, err, com.ID)
	}

	// As an earlier version registered it: the key in the entry.
	key := fixture.Key()
	old := fixture.CommunityFromKey(key, time.Hour, 0, archive.Topic{1})
	old.LegacySigningKey = key
	raw, _ := json.Marshal(old)
	if _, err := b.Communities.Put(ctx, old.ID.String(), raw); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, old.ID.String(), &state.Build{LastEnd: 10, InfoHash: ih, Magnet: "magnet:?xt=urn:btih:" + ih}, 0); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.announce(ctx, old.ID, "republish", ih, ""); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := Verify(tr.sent[len(tr.sent)-1].Message); err != nil || v.Community != old.ID {
		t.Fatalf("announcement of the old entry signed by %v (%v), want %s", v, err, old.ID)
	}
	if n := strings.Count(logs.String(), "archivectl setup"); n != 1 {
		t.Fatalf("%d warnings to move the key, want 1:\n%s", n, logs.String())
	}
	moved, err := reg.MoveSigningKeys(ctx, keys)
	if err != nil || len(moved) != 1 || moved[0] != old.ID {
		t.Fatalf("moved %v (%v), want %s", moved, err, old.ID)
	}
	e, err := b.Communities.Get(ctx, old.ID.String())
	if err != nil || strings.Contains(string(e.Value()), "signingKey") {
		t.Fatalf("registry entry after the move: %s (%v)", e.Value(), err)
	}
	if err := s.announce(ctx, old.ID, "republish", ih, ""); err != nil {
		t.Fatal(err)
	}
	if v, err := Verify(tr.sent[len(tr.sent)-1].Message); err != nil || v.Community != old.ID {
		t.Fatalf("announcement after the move signed by %v (%v)", v, err)
	}
}
