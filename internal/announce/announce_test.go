package announce

import (
	"context"
	"testing"
	"time"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

type capture struct{ sent []*Announcement }

func (c *capture) Send(_ context.Context, a *Announcement) error {
	c.sent = append(c.sent, a)
	return nil
}

// TestClockOnlyGrows announces while the wall clock jumps backwards: every
// announcement still carries a larger clock than the last.
func TestClockOnlyGrows(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	ctx := context.Background()
	key, _ := secp256k1.GeneratePrivateKey()
	com := &registry.Community{Topics: []archive.Topic{{1}}, SigningKey: key.Serialize(), Interval: registry.Duration(time.Hour)}
	copy(com.ID[:], key.PubKey().SerializeCompressed())
	if err := registry.New(b.Communities).Put(ctx, com); err != nil {
		t.Fatal(err)
	}
	st := &state.Store{KV: b.State}
	c := com.ID.String()
	ih := "5ba51fec45a6e521db60b2e33dbabeb61308fdfa"
	if _, err := st.Put(ctx, c, &state.Build{LastEnd: 10, InfoHash: ih, Magnet: "magnet:?xt=urn:btih:" + ih}, 0); err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	tr := &capture{}
	s := New(Service{Bus: b, Registry: registry.New(b.Communities), State: st, Transports: []Transport{tr},
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
