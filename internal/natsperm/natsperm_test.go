package natsperm_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/crypto/bcrypt"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/natsperm"
)

// TestAuthorization has nats-server parse the rendered authorization and
// checks the layout's rules on what it parsed: every user has a password
// hash and its own inbox, only the announcer and the admin may read the
// signing keys, no service user may create or update a stream, and the
// ingest user may do nothing but ingest.
func TestAuthorization(t *testing.T) {
	users := natsperm.Users()
	hashes := map[string]string{}
	for _, u := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(u.Name), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		hashes[u.Name] = string(h)
	}
	if _, err := natsperm.Authorization(users, map[string]string{}); err == nil {
		t.Fatal("rendered without hashes")
	}
	conf, err := natsperm.Authorization(users, hashes)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "auth.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Users) != len(users) {
		t.Fatalf("%d users parsed, want %d", len(o.Users), len(users))
	}
	keys := "$JS.API.DIRECT.GET.KV_" + bus.BucketCommunityKeys + ".$KV." + bus.BucketCommunityKeys + ".0x02"
	for _, u := range o.Users {
		if u.Password != hashes[u.Username] {
			t.Errorf("%s: password %q, want its bcrypt hash", u.Username, u.Password)
		}
		p := u.Permissions
		if u.Username == natsperm.Admin {
			if p.Publish.Allow[0] != ">" || p.Subscribe.Allow[0] != ">" {
				t.Errorf("admin: %+v", p)
			}
			continue
		}
		if !slices.Contains(p.Subscribe.Allow, natsperm.InboxPrefix(u.Username)+".>") {
			t.Errorf("%s may not subscribe to its inbox: %v", u.Username, p.Subscribe.Allow)
		}
		for _, s := range p.Subscribe.Allow {
			if strings.HasPrefix(s, "_INBOX") && s != natsperm.InboxPrefix(u.Username)+".>" {
				t.Errorf("%s may subscribe to %s", u.Username, s)
			}
		}
		for _, denied := range []string{"$JS.API.STREAM.CREATE.X", "$JS.API.STREAM.UPDATE.X", "$JS.API.CONSUMER.DURABLE.CREATE.X.y"} {
			if !matchesAny(p.Publish.Deny, denied) || matchesAny(p.Publish.Allow, denied) {
				t.Errorf("%s may publish %s", u.Username, denied)
			}
		}
		if !matchesAny(p.Subscribe.Deny, "$JS.EVENT.ADVISORY.X") {
			t.Errorf("%s may listen to JetStream advisories", u.Username)
		}
		readsKeys := matchesAny(p.Publish.Allow, keys) && !matchesAny(p.Publish.Deny, keys)
		if readsKeys != (u.Username == natsperm.Announcer) {
			t.Errorf("%s reads the signing keys: %v", u.Username, readsKeys)
		}
		if u.Username == natsperm.Ingest && (!slices.Equal(p.Publish.Allow, []string{bus.SubjectIngest("*")}) || len(p.Subscribe.Allow) != 1) {
			t.Errorf("ingest may do more than ingest: %+v %+v", p.Publish, p.Subscribe)
		}
	}
}

// matchesAny reports whether subject matches one of the patterns (NATS
// wildcards: * one token, > the rest).
func matchesAny(patterns []string, subject string) bool {
	for _, p := range patterns {
		if matches(p, subject) {
			return true
		}
	}
	return false
}

func matches(pattern, subject string) bool {
	pt, st := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, t := range pt {
		if t == ">" {
			return len(st) > i
		}
		if i >= len(st) || (t != "*" && t != st[i]) {
			return false
		}
	}
	return len(pt) == len(st)
}
