package ctl

import (
	"bufio"
	"strings"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/registry"
)

// subcommands is every archivectl command line that takes flags.
var subcommands = [][]string{
	{"build"}, {"inspect"}, {"extract"}, {"fetch"}, {"probe"}, {"sample"}, {"keygen"},
	{"community", "add"}, {"community", "list"}, {"community", "disable"}, {"community", "enable"}, {"community", "remove"},
	{"backfill"}, {"trigger"}, {"dlq", "list"}, {"dlq", "retry"}, {"conflicts", "list"}, {"setup"}, {"deploy-secrets"},
}

// TestEveryCommandFlags checks that every subcommand answers -h with its
// usage (exit 0) and rejects an unknown flag (exit 2) before doing anything
// (no NATS server runs here), and that the command groups do the same.
func TestEveryCommandFlags(t *testing.T) {
	for _, sc := range subcommands {
		name := strings.Join(sc, " ")
		t.Run(name+" -h", func(t *testing.T) {
			stdout, stderr, code := run(t, "", append(sc, "-h")...)
			if code != 0 || !strings.Contains(stderr, "usage: archivectl "+name) || stdout != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
			}
		})
		t.Run(name+" -bogus", func(t *testing.T) {
			_, stderr, code := run(t, "", append(sc, "-bogus")...)
			if code != 2 || !strings.Contains(stderr, "flag provided but not defined: -bogus") {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
		})
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-h"}, 0, "usage: archivectl <command>"},
		{[]string{"community", "-h"}, 0, "usage: archivectl community"},
		{[]string{"community"}, 2, "usage: archivectl community"},
		{[]string{"community", "frob"}, 2, "unknown subcommand"},
		{[]string{"dlq", "-h"}, 0, "usage: archivectl dlq"},
		{[]string{"dlq"}, 2, "usage: archivectl dlq"},
		{[]string{"dlq", "frob"}, 2, "usage: archivectl dlq"},
		{[]string{"conflicts"}, 2, "usage: archivectl conflicts"},
		{[]string{"community", "list", "extra"}, 2, "usage: archivectl community list"},
		{[]string{"backfill"}, 2, "give -community 0x… or -all"},
		{[]string{"sample", "-from", "yesterday"}, 2, `invalid value "yesterday" for flag -from`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, stderr, code := run(t, "", tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d (want %d), stderr %q (want %q)", code, tc.code, stderr, tc.want)
			}
		})
	}
}

func TestParseTime(t *testing.T) {
	now := time.Unix(1_800_000_000, 500_000_000)
	for in, want := range map[string]uint64{"1790000000": 1_790_000_000, "now": 1_800_000_000, "now-10m": 1_799_999_400,
		"now+1h": 1_800_003_600, "2027-01-15T08:00:00Z": 1_800_000_000} {
		if got, err := parseTime(in, now); err != nil || got != want {
			t.Errorf("%q: %d %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "yesterday", "now-", "now-x", "now*5m", "now--5m", "-5"} {
		if got, err := parseTime(in, now); err == nil {
			t.Errorf("%q accepted as %d", in, got)
		}
	}
}

// TestSampleForCommunity checks sample -community writes messages a fleet
// accepts for that community: its universal topic, timestamps in
// [-from, -to), distinct hashes, real signer keys.
func TestSampleForCommunity(t *testing.T) {
	id := "0x02cfca2ca218f099107c5d4b61cb17bd6566137dbecf7e4557984c882a16accd87"
	c, _ := archive.ParseCommunityID(id)
	out := mustRun(t, "", "sample", "-community", id, "-n", "300", "-from", "1790000000", "-to", "1790000300", "-size", "0")
	sc := bufio.NewScanner(strings.NewReader(out))
	seen := map[string]bool{}
	for sc.Scan() {
		m, err := archive.DecodeMessageJSON(sc.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if m.Topic != registry.UniversalTopic(c) || m.Timestamp < 1_790_000_000 || m.Timestamp >= 1_790_000_300 || len(m.Payload) != 0 {
			t.Fatalf("message %+v", m)
		}
		if err := m.Validate(); err != nil {
			t.Fatal(err)
		}
		seen[m.Hash.String()] = true
	}
	if len(seen) != 300 {
		t.Fatalf("%d distinct messages, want 300", len(seen))
	}
	if _, errs, code := run(t, "", "sample", "-from", "now", "-to", "now-1h"); code != 1 || !strings.Contains(errs, "-from before -to") {
		t.Fatalf("reversed range: exit %d %s", code, errs)
	}
}
