package store

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"golang.org/x/crypto/sha3"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

var community = func() archive.CommunityID {
	id, _ := archive.ParseCommunityID("0x02cfca2ca218f099107c5d4b61cb17bd6566137dbecf7e4557984c882a16accd87")
	return id
}()

func msg(ts uint64) archive.Message {
	p := make([]byte, 40)
	rand.Read(p)
	h := sha3.NewLegacyKeccak256()
	h.Write(p)
	sig := make([]byte, 65)
	sig[0] = 4
	return archive.Message{Sig: sig, Timestamp: ts, Topic: archive.Topic{1}, Payload: p, Hash: h.Sum(nil)}
}

func collect(t *testing.T, src archive.Source, from, to uint64) []archive.Message {
	t.Helper()
	var out []archive.Message
	for m, err := range src.Messages(context.Background(), from, to) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func TestRangeReadCostAndLateMessages(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	s := &Store{Bus: b}
	ctx := context.Background()
	const start = 1_700_006_400 // a UTC midnight
	var all []archive.Message
	for d := uint64(0); d < 60; d++ {
		for i := uint64(0); i < 20; i++ {
			all = append(all, msg(start+d*day+i*3600))
		}
	}
	if res, err := s.Ingest(ctx, community, all); err != nil || res.Stored != len(all) {
		t.Fatalf("ingest: %+v %v", res, err)
	}
	src := s.Source(community)
	before := s.Scanned()
	week := collect(t, src, start+10*day, start+17*day)
	if len(week) != 7*20 {
		t.Fatalf("week read %d messages, want 140", len(week))
	}
	if scanned := s.Scanned() - before; scanned != 7*20 {
		t.Fatalf("reading one week scanned %d stored messages of %d; want only the week's 140", scanned, len(all))
	}
	for i := 1; i < len(week); i++ {
		if week[i-1].Timestamp > week[i].Timestamp {
			t.Fatal("messages not ordered by timestamp")
		}
	}
	// A late message for that week, and a duplicate, before the window is built.
	late := msg(start + 12*day + 5)
	if res, _ := s.Ingest(ctx, community, []archive.Message{late, all[0]}); res.Stored != 1 || res.Duplicates != 1 {
		t.Fatalf("late ingest: %+v", res)
	}
	if got := collect(t, src, start+10*day, start+17*day); len(got) != 141 {
		t.Fatalf("after a late message the week has %d, want 141", len(got))
	}
	// Reads leave no consumers behind (a server limit caps them).
	si, err := b.JS.Stream(ctx, bus.StreamMessages)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := si.Info(ctx)
	if info.State.Consumers != 0 {
		t.Fatalf("%d consumers left on the message stream after reads", info.State.Consumers)
	}
	// Partial-day bounds are exact.
	if got := collect(t, src, start+3600, start+2*3600+1); len(got) != 2 {
		t.Fatalf("two-hour range read %d messages, want 2", len(got))
	}
}

func TestIngestRejectsBadInput(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	reg := registry.New(b.Communities)
	s := &Store{Bus: b, Known: func(ctx context.Context, c archive.CommunityID) error {
		_, err := reg.Get(ctx, c)
		return err
	}}
	srv := httptest.NewServer(func() http.Handler {
		mux := http.NewServeMux()
		mux.Handle(IngestPath, s.Handler("secret"))
		return mux
	}())
	defer srv.Close()
	good, _ := json.Marshal([]archive.Message{msg(5)})
	tests := []struct {
		name, id, token, body string
		code                  int
	}{
		{"no token", community.String(), "", string(good), http.StatusUnauthorized},
		{"wrong token", community.String(), "nope", string(good), http.StatusUnauthorized},
		{"bad id", "0x..%2F..%2Fetc", "secret", string(good), http.StatusBadRequest},
		{"bad json", community.String(), "secret", "[{", http.StatusBadRequest},
		{"bad message", community.String(), "secret", `[{"sig":"0x04","timestamp":1,"topic":"0x00000001","payload":"0x","hash":"0x01"}]`, http.StatusBadRequest},
		{"unknown community", community.String(), "secret", string(good), http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/communities/"+tt.id+"/messages", strings.NewReader(tt.body))
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.code {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.code)
			}
		})
	}
	if _, err := s.Ingest(context.Background(), community, []archive.Message{msg(1)}); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("ingest for an unregistered community: %v", err)
	}
}
