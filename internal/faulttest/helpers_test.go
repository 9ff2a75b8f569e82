package faulttest

import (
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/messages"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
)

func (e *env) register(interval time.Duration, since uint64) *registry.Community {
	key := fixture.Key()
	com := fixture.CommunityFromKey(key, interval, since, archive.Topic{1, 2, 3, 4})
	if _, err := registry.NewKeys(e.ctl.CommunityKeys).Put(context.Background(), key); err != nil {
		e.t.Fatal(err)
	}
	if err := registry.New(e.ctl.Communities).Put(context.Background(), com); err != nil {
		e.t.Fatal(err)
	}
	return com
}

// messages makes n messages of size payload bytes, from one signer on the
// community's first topic, spread over [from, to).
func sampleMessages(com *registry.Community, n, size int, from, to uint64) []archive.Message {
	return fixture.Messages{N: n, From: from, To: to, Topics: com.Topics[:1], Size: size}.Make()
}

// communities registers k hourly communities starting at since, each given
// n 200-byte messages spread over [since, until).
func (e *env) communities(k, n int, since, until uint64) ([]*registry.Community, [][]archive.Message) {
	coms := make([]*registry.Community, k)
	msgs := make([][]archive.Message, k)
	for i := range coms {
		coms[i] = e.register(time.Hour, since)
		msgs[i] = sampleMessages(coms[i], n, 200, since, until)
		e.ingest(coms[i], msgs[i])
	}
	return coms, msgs
}

func (e *env) ingest(com *registry.Community, msgs []archive.Message) {
	s := &messages.Store{Bus: e.ctl}
	for i := 0; i < len(msgs); i += 2000 {
		if _, err := s.Ingest(context.Background(), com.ID, msgs[i:min(i+2000, len(msgs))]); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *env) build(com *registry.Community) *state.Build {
	b, _, err := (&state.Store{KV: e.ctl.State}).GetBuild(context.Background(), com.ID.String())
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// waitBuilt waits until the community's committed state reaches end.
func (e *env) waitBuilt(com *registry.Community, end uint64, timeout time.Duration) *state.Build {
	e.t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		if b := e.build(com); b.LastEnd >= end {
			return b
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("community %s not built to %d within %v (at %d)", com.ID, end, timeout, e.build(com).LastEnd)
		}
	}
}

func (e *env) due(com *registry.Community, from, end uint64, msgID string) {
	ev := bus.DueEvent{Community: com.ID.String(), From: from, End: end, Reason: "test"}
	if msgID == "" {
		msgID = ev.MsgID()
	}
	if _, err := e.ctl.Publish(context.Background(), bus.SubjectDue(ev.Community), msgID, ev); err != nil {
		e.t.Fatal(err)
	}
}

var logTime = regexp.MustCompile(`time=(\S+)`)

// lineTime parses the time= field of a text log line.
func lineTime(t *testing.T, line string) time.Time {
	m := logTime.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no time in %q", line)
	}
	ts, err := time.Parse(time.RFC3339Nano, m[1])
	if err != nil {
		t.Fatal(err)
	}
	return ts
}
