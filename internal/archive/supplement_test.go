package archive

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
)

// TestSupplementArchivesLateMessages appends a built window's late messages as
// an archive of their own, as the fleet does at a community's next build:
// earlier entries stay byte-identical, the supplement has a new id and the
// old window's range, and a member reading every entry oldest first gets
// every message exactly once.
func TestSupplementArchivesLateMessages(t *testing.T) {
	c := testCommunity(t, 21)
	l := testLayout(t)
	const start = 1_700_000_000
	onTime := genMessages(1, 60, start, 2*week, 200)
	first := mustBuild(t, l, BuildOptions{Community: c, Topics: testTopics, From: start, To: start + 2*week,
		Source: NewSliceSource(onTime)})
	oldIndex := readFile(t, l.ArchiveDir(c)+"/"+IndexFile)

	late := genMessages(2, 7, start+week/2, week/4, 300) // inside the first window, arriving after its build
	next := genMessages(3, 20, start+2*week, week, 200)
	res := mustBuild(t, l, BuildOptions{Community: c, Topics: testTopics, From: start + 2*week, To: start + 3*week,
		Source: NewSliceSource(next), Supplements: []Window{{start, start + week}}, SupplementSource: NewSliceSource(late)})
	if res.SupplementArchives != 1 || res.LateMessages != len(late) || res.Messages != len(late)+len(next) {
		t.Fatalf("supplement archives %d, late %d, messages %d; want 1, %d, %d", res.SupplementArchives, res.LateMessages,
			res.Messages, len(late), len(late)+len(next))
	}
	newIndex := readFile(t, l.ArchiveDir(c)+"/"+IndexFile)
	if !bytes.HasPrefix(newIndex, oldIndex) {
		t.Fatal("earlier index entries changed")
	}
	sup := res.Archives[0]
	if sup.From != start || sup.To != start+week {
		t.Fatalf("supplement range [%d, %d), want the old window's [%d, %d)", sup.From, sup.To, start, start+week)
	}
	if slices.Contains(first.ArchiveIDs, sup.ID) {
		t.Fatal("supplement reuses an existing archive id")
	}
	got, ix := extractAll(t, l.ArchiveDir(c), nil)
	if len(ix.Entries) != len(first.ArchiveIDs)+len(res.ArchiveIDs) {
		t.Fatalf("index has %d entries, want %d", len(ix.Entries), len(first.ArchiveIDs)+len(res.ArchiveIDs))
	}
	want := sortedMessages(slices.Concat(onTime, late, next))
	seen := map[string]int{}
	for _, m := range got {
		seen[string(m.Hash)]++
	}
	for _, m := range want {
		if seen[string(m.Hash)] != 1 {
			t.Fatalf("message %s is in %d archives, want 1", m.Hash, seen[string(m.Hash)])
		}
	}
	if len(got) != len(want) {
		t.Fatalf("extracted %d messages, want %d", len(got), len(want))
	}
}

func TestSupplementRules(t *testing.T) {
	c := testCommunity(t, 22)
	src := NewSliceSource(genMessages(1, 10, 1_700_000_000, week, 100))
	tests := []struct {
		name string
		sup  []Window
		want string
	}{
		{"empty", []Window{{5, 5}}, "is empty"},
		{"past the start", []Window{{1_700_000_000, 1_700_000_000 + 2*week}}, "reaches past"},
		{"overlapping", []Window{{100, 300}, {200, 400}}, "overlap"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Build(context.Background(), testLayout(t), BuildOptions{Community: c, From: 1_700_000_000 + week,
				To: 1_700_000_000 + 2*week, Source: src, Supplements: tt.sup})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestMessageBinaryRoundTrip(t *testing.T) {
	for i, m := range genMessages(4, 20, 1_700_000_000, week, 64) {
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var got Message
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		if compareMessages(&m, &got) != 0 || !bytes.Equal(m.Padding, got.Padding) || m.ThirdPartyID != got.ThirdPartyID || m.Topic != got.Topic {
			t.Fatalf("message %d changed in a binary round trip", i)
		}
	}
	var m Message
	if err := m.UnmarshalBinary([]byte{0x1a, 0x02, 1, 2}); err == nil {
		t.Fatal("a 2-byte topic was accepted")
	}
}
