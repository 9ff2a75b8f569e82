package archiver

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/lock"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/store"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// TestLargestMessageArchived ingests a message at status-go's archive cap
// (payload+sig = 30,000,000 bytes; its payload is kept in the object store,
// not the stream) and a 1 MiB one, builds, and reads both back from the
// archives whole.
func TestLargestMessageArchived(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	ctx := context.Background()
	now := uint64(time.Now().Unix())
	com := fixture.Community(time.Hour, now-2*3600, archive.Topic{7})
	reg := registry.New(b.Communities)
	if err := reg.Put(ctx, com); err != nil {
		t.Fatal(err)
	}
	st := &store.Store{Bus: b}
	s := New(Service{Bus: b, Registry: reg, State: &state.Store{KV: b.State}, Sources: st, Locker: lock.NewLocal(),
		Config: Config{WorkDir: t.TempDir(), AnnounceList: [][]string{}}, Logger: testenv.Logger()}, prometheus.NewRegistry())
	big := fixture.Messages{N: 1, From: com.Since + 10, Topics: com.Topics[:1], Size: archive.MaxMessageBytes - 65}.Make()
	mib := fixture.Messages{N: 1, From: com.Since + 20, Topics: com.Topics[:1], Size: 1 << 20}.Make()
	msgs := append(big, mib...)
	if res, err := st.Ingest(ctx, com.ID, msgs); err != nil || res.Stored != 2 {
		t.Fatalf("ingest: %+v %v", res, err)
	}
	if _, err := s.build(ctx, s.Logger, com, bus.DueEvent{Community: com.ID.String(), End: com.Since + 3600}, 1); err != nil {
		t.Fatal(err)
	}
	got, ix := extract(t, s, com.ID)
	if len(got) != 2 || len(ix.Entries) != 2 {
		t.Fatalf("%d messages in %d archives, want 2 in 2 (one chunk each: together they exceed the cap)", len(got), len(ix.Entries))
	}
	for i, m := range msgs {
		if !bytes.Equal(got[i].Hash, m.Hash) || !bytes.Equal(got[i].Payload, m.Payload) {
			t.Fatalf("message %d (%d payload bytes) not archived whole", i, len(m.Payload))
		}
	}
	t.Logf("largest message archived: %d bytes of payload+sig", got[0].Size())
}
