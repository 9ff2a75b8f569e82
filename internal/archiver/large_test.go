package archiver

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
)

// TestLargestMessageArchived ingests a message at status-go's archive cap
// (payload+sig = 30,000,000 bytes; its payload is kept in the object store,
// not the stream) and a 1 MiB one, builds, and reads both back from the
// archives whole.
func TestLargestMessageArchived(t *testing.T) {
	ctx := context.Background()
	now := uint64(time.Now().Unix())
	com := fixture.Community(time.Hour, now-2*3600, archive.Topic{7})
	s, st := newBuildService(t, com)
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
