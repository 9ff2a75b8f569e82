package messages

import (
	"context"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// TestNewest checks Newest against what was ingested: nothing, a message
// older than the days it asks one by one, a recent one, an older one stored
// after it (a back-fill), a record without the timestamp header, and other
// communities' messages and the build fence, which do not count.
func TestNewest(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	register(t, b, 1)
	s := &Store{Bus: b}
	ctx := context.Background()
	now := uint64(time.Now().Unix())
	newest := func(c archive.CommunityID, want uint64) {
		t.Helper()
		ts, ok, err := s.Newest(ctx, c)
		if err != nil || ok != (want != 0) || ts != want {
			t.Fatalf("Newest: %d %v %v, want %d", ts, ok, err, want)
		}
	}
	ingest := func(c archive.CommunityID, m archive.Message) {
		t.Helper()
		if res, err := s.Ingest(ctx, c, []archive.Message{m}); err != nil || res.Stored+res.Late != 1 {
			t.Fatalf("ingest: %+v %v", res, err)
		}
	}
	newest(community, 0)

	// Only a message from 100 days ago: past the days asked one by one, the
	// community's last stored record answers. The fence is no message.
	old := now - 100*day
	ingest(community, msg(old))
	if _, err := s.Fence(ctx, community); err != nil {
		t.Fatal(err)
	}
	newest(community, old)

	// A recent message, then one of three days ago stored after it.
	recent := now - 2*3600
	ingest(community, msg(recent))
	newest(community, recent)
	ingest(community, msg(now-3*day))
	str, err := b.JS.Stream(ctx, bus.StreamMessages)
	if err != nil {
		t.Fatal(err)
	}
	last, err := str.GetLastMsgForSubject(ctx, "msgs."+community.String()+".*.*")
	// The last stored record (a wildcard last-by-subject get) is the older
	// one; Newest still finds the recent one.
	var lastTS uint64
	if err == nil {
		recordTimestamps(&bus.Record{Subject: last.Subject, Seq: last.Sequence, Header: last.Header, Data: last.Data}, func(ts uint64) { lastTS = ts })
	}
	if err != nil || lastTS != now-3*day {
		t.Fatalf("last stored record: %v %v, want the one of three days ago", last, err)
	}
	newest(community, recent)

	// Another community's newer message is its own.
	other := fixture.Community(time.Hour, 1, topic)
	if err := registry.New(b.Communities).Put(ctx, other); err != nil {
		t.Fatal(err)
	}
	ingest(other.ID, msg(now-60))
	newest(community, recent)
	newest(other.ID, now-60)

	// A record written without the timestamp header (not by ingest) is
	// decoded for its timestamp.
	m := msg(now - 30)
	data, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.JS.Publish(ctx, Subject(community, m.Timestamp, m.Hash), data); err != nil {
		t.Fatal(err)
	}
	newest(community, now-30)
}
