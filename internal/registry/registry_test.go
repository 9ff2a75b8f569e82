package registry_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/sha3"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// keccakTopic is a chat's content topic computed here, not by the registry:
// the first 4 bytes of the legacy Keccak-256 (not SHA3-256) of the chat id.
func keccakTopic(chat string) archive.Topic {
	h := sha3.NewLegacyKeccak256()
	h.Write([]byte(chat))
	var t archive.Topic
	copy(t[:], h.Sum(nil))
	return t
}

func TestChatTopic(t *testing.T) {
	// Keccak-256("") = c5d24601…; SHA3-256("") would be a7ffc6f8….
	if got := registry.ChatTopic(""); got.String() != "0xc5d24601" {
		t.Fatalf("ChatTopic(\"\") = %s, want Keccak-256's 0xc5d24601", got)
	}
	id := fixture.ID(fixture.Key())
	if got, want := registry.UniversalTopic(id), keccakTopic(id.String()+"-memberUpdate"); got != want {
		t.Fatalf("universal topic %s, want %s", got, want)
	}
	if got := registry.UniversalChatID(id); got != id.String()+"-memberUpdate" {
		t.Fatalf("universal chat %q", got)
	}
}

// TestValidateChats puts communities with chats in a real NATS KV bucket:
// the community's own channel chats are kept with their topics added (the
// universal one always), anything else is refused with the reason and not
// stored, and what is read back equals what was put.
func TestValidateChats(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	reg := registry.New(b.Communities)
	ctx := context.Background()
	const uuid1, uuid2 = "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d", "11111111-2222-4333-8444-555555555555"
	explicit := archive.Topic{0xde, 0xad, 0xbe, 0xef}
	for _, tc := range []struct {
		name string
		// chats of the community with id (0x…); foreign is another id.
		chats  func(id, foreign string) []string
		topics func(id string) []archive.Topic // given besides the chats
		err    string                          // "" when valid
	}{
		{name: "none", chats: func(id, _ string) []string { return nil }},
		{name: "one channel", chats: func(id, _ string) []string { return []string{id + uuid1} }},
		{name: "two channels", chats: func(id, _ string) []string { return []string{id + uuid1, id + uuid2} }},
		{name: "a given topic that is also a chat's", chats: func(id, _ string) []string { return []string{id + uuid1} },
			topics: func(id string) []archive.Topic { return []archive.Topic{explicit, keccakTopic(id + uuid1)} }},
		{name: "given topic kept", chats: func(id, _ string) []string { return []string{id + uuid2} },
			topics: func(string) []archive.Topic { return []archive.Topic{explicit} }},
		{name: "foreign community", chats: func(_, foreign string) []string { return []string{foreign + uuid1} },
			err: "is not a channel chat id of this community"},
		{name: "foreign after a good one", chats: func(id, foreign string) []string { return []string{id + uuid1, foreign + uuid2} },
			err: "is not a channel chat id of this community"},
		{name: "universal chat", chats: func(id, _ string) []string { return []string{id + "-memberUpdate"} },
			err: "is not a channel chat id of this community"},
		{name: "magnet links chat", chats: func(id, _ string) []string { return []string{id + "-magnetlinks"} },
			err: "is not a channel chat id of this community"},
		{name: "no channel", chats: func(id, _ string) []string { return []string{id} },
			err: "is not a channel chat id of this community"},
		{name: "uuid alone", chats: func(string, string) []string { return []string{uuid1} },
			err: "is not a channel chat id of this community"},
		{name: "upper-case community id", chats: func(id, _ string) []string { return []string{"0x" + strings.ToUpper(id[2:]) + uuid1} },
			err: "is not a channel chat id of this community"},
		{name: "empty", chats: func(string, string) []string { return []string{""} },
			err: "is not a channel chat id of this community"},
		{name: "duplicate", chats: func(id, _ string) []string { return []string{id + uuid1, id + uuid2, id + uuid1} },
			err: "listed twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			com := fixture.Community(time.Hour, 1)
			id := com.ID.String()
			com.Chats = tc.chats(id, fixture.ID(fixture.Key()).String())
			var given []archive.Topic
			if tc.topics != nil {
				given = tc.topics(id)
				com.Topics = slices.Clone(given)
			}
			err := reg.Put(ctx, com)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), id) {
					t.Fatalf("Put: %v, want an error naming the community and %q", err, tc.err)
				}
				if _, err := reg.Get(ctx, com.ID); !errors.Is(err, registry.ErrNotFound) {
					t.Fatalf("a refused community was stored: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// The topics are the ones given and every chat's, the universal
			// one included, each once.
			want := slices.Clone(given)
			for _, c := range append([]string{id + "-memberUpdate"}, com.Chats...) {
				if tp := keccakTopic(c); !slices.Contains(want, tp) {
					want = append(want, tp)
				}
			}
			got, err := reg.Get(ctx, com.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Chats, com.Chats) {
				t.Fatalf("chats read back %q, put %q", got.Chats, com.Chats)
			}
			if !slices.Equal(sorted(got.Topics), sorted(want)) {
				t.Fatalf("topics %v, want %v", got.Topics, want)
			}
			if ids := got.ChatIDs(); !slices.Equal(ids, append([]string{id + "-memberUpdate"}, com.Chats...)) {
				t.Fatalf("ChatIDs %q", ids)
			}
			// Putting it again adds nothing.
			if err := reg.Put(ctx, got); err != nil {
				t.Fatal(err)
			}
			if again, err := reg.Get(ctx, com.ID); err != nil || !slices.Equal(again.Topics, got.Topics) || !slices.Equal(again.Chats, got.Chats) {
				t.Fatalf("second put: %+v %v", again, err)
			}
		})
	}
}

func sorted(ts []archive.Topic) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = hex.EncodeToString(t[:])
	}
	slices.Sort(out)
	return out
}

// TestKeys stores signing keys in their own bucket: a key goes under the
// community it belongs to, Get checks what it reads, and a registry entry
// never holds one.
func TestKeys(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	ctx := context.Background()
	reg, keys := registry.New(b.Communities), registry.NewKeys(b.CommunityKeys)
	key := fixture.Key()
	id, err := keys.Put(ctx, key)
	if err != nil || id != fixture.ID(key) {
		t.Fatalf("Put: %s %v, want %s", id, err, fixture.ID(key))
	}
	if got, err := keys.Get(ctx, id); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("Get: %x %v", got, err)
	}
	other := fixture.ID(fixture.Key())
	if _, err := keys.Get(ctx, other); !errors.Is(err, registry.ErrNoKey) {
		t.Fatalf("Get of a community without a key: %v, want ErrNoKey", err)
	}
	// A key stored under another community's name is refused on reading.
	if _, err := b.CommunityKeys.Put(ctx, other.String(), []byte(`{"signingKey":"`+archive.HexBytes(key).String()+`"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Get(ctx, other); !errors.Is(err, registry.ErrCorrupt) {
		t.Fatalf("Get of a foreign key: %v, want ErrCorrupt", err)
	}
	for _, bad := range [][]byte{nil, make([]byte, 31), make([]byte, 32)} {
		if _, err := keys.Put(ctx, bad); err == nil {
			t.Fatalf("Put(%x) accepted", bad)
		}
	}
	com := fixture.CommunityFromKey(key, time.Hour, 1)
	if err := reg.Put(ctx, com); err != nil {
		t.Fatal(err)
	}
	e, err := b.Communities.Get(ctx, id.String())
	if err != nil || bytes.Contains(e.Value(), []byte("signingKey")) || bytes.Contains(e.Value(), []byte(hex.EncodeToString(key))) {
		t.Fatalf("registry entry %s (%v) holds the key", e.Value(), err)
	}
	com.LegacySigningKey = key
	if err := reg.Put(ctx, com); err == nil || !strings.Contains(err.Error(), "archivectl setup") {
		t.Fatalf("Put of an entry with its key: %v, want a refusal saying to run archivectl setup", err)
	}
	if err := keys.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Get(ctx, id); !errors.Is(err, registry.ErrNoKey) {
		t.Fatalf("Get after Delete: %v", err)
	}
	if err := keys.Delete(ctx, id); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
}

// TestMoveSigningKeys writes registry entries as an earlier version did,
// with the signing key in them, and moves the keys: each goes to the keys
// bucket and leaves its entry (and the bucket's stream: one revision per
// key), the rest of the entry kept; entries without a key, or with a key
// that is not theirs, are left alone; a second run moves nothing.
func TestMoveSigningKeys(t *testing.T) {
	b := testenv.Bus(t, testenv.NATS(t), bus.Config{})
	ctx := context.Background()
	reg, keys := registry.New(b.Communities), registry.NewKeys(b.CommunityKeys)
	var legacy []archive.CommunityID
	var legacyKeys [][]byte
	for i := range 3 {
		key := fixture.Key()
		com := fixture.CommunityFromKey(key, time.Duration(i+1)*time.Hour, 7, archive.Topic{1, 2, 3, byte(i)})
		com.LegacySigningKey = key
		raw, _ := json.Marshal(com)
		if _, err := b.Communities.Put(ctx, com.ID.String(), raw); err != nil {
			t.Fatal(err)
		}
		legacy, legacyKeys = append(legacy, com.ID), append(legacyKeys, key)
	}
	plain := fixture.Community(time.Hour, 1)
	if err := reg.Put(ctx, plain); err != nil {
		t.Fatal(err)
	}
	wrong := fixture.Community(time.Hour, 1)
	wrong.LegacySigningKey = fixture.Key()
	raw, _ := json.Marshal(wrong)
	if _, err := b.Communities.Put(ctx, wrong.ID.String(), raw); err != nil {
		t.Fatal(err)
	}

	moved, err := reg.MoveSigningKeys(ctx, keys)
	if err == nil || !strings.Contains(err.Error(), wrong.ID.String()) || !strings.Contains(err.Error(), "does not belong") {
		t.Fatalf("error %v, want one naming %s's foreign key", err, wrong.ID)
	}
	slices.SortFunc(moved, func(a, b archive.CommunityID) int { return strings.Compare(a.String(), b.String()) })
	want := slices.Clone(legacy)
	slices.SortFunc(want, func(a, b archive.CommunityID) int { return strings.Compare(a.String(), b.String()) })
	if !slices.Equal(moved, want) {
		t.Fatalf("moved %v, want %v", moved, want)
	}
	for i, id := range legacy {
		got, err := keys.Get(ctx, id)
		if err != nil || !bytes.Equal(got, legacyKeys[i]) {
			t.Fatalf("key of %s after the move: %x %v", id, got, err)
		}
		com, err := reg.Get(ctx, id)
		if err != nil || len(com.LegacySigningKey) != 0 || time.Duration(com.Interval) != time.Duration(i+1)*time.Hour || com.Since != 7 {
			t.Fatalf("entry of %s after the move: %+v %v", id, com, err)
		}
	}
	// The old revisions are gone from the registry's stream.
	s, err := b.JS.Stream(ctx, "KV_"+bus.BucketCommunities)
	if err != nil {
		t.Fatal(err)
	}
	for seq := s.CachedInfo().State.FirstSeq; seq <= s.CachedInfo().State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted
		}
		for i, k := range legacyKeys {
			if bytes.Contains(m.Data, []byte(hex.EncodeToString(k))) {
				t.Fatalf("the registry's stream still holds %s's key at sequence %d", legacy[i], seq)
			}
		}
	}
	if com, err := reg.Get(ctx, wrong.ID); err != nil || len(com.LegacySigningKey) == 0 {
		t.Fatalf("a foreign key was moved: %+v %v", com, err)
	}
	if moved, err := reg.MoveSigningKeys(ctx, keys); len(moved) != 0 || err == nil {
		t.Fatalf("second run moved %v (%v)", moved, err)
	}
}
