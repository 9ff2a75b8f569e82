package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/console"
	"github.com/archivefleet/archivefleet/internal/deploysecrets"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/natsperm"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// TestRunConsole: cmd/console's service serves the page on its listener
// (read-only on loopback without a token) and refuses actions without the
// operator token; a listener other hosts reach needs the token.
func TestRunConsole(t *testing.T) {
	s := testenv.NATS(t)
	cfg := DefaultConsoleConfig()
	cfg.NATSURL, cfg.HTTPAddr, cfg.LogLevel = s.ClientURL(), fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), "warn"
	testenv.Bus(t, s, cfg.BusConfig()) // the topology, as archivectl setup makes it
	startConsole(t, cfg)
	base := "http://" + cfg.HTTPAddr + console.Path
	var page string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(base)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				page = string(body)
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("console not serving: %v", err)
		}
	}
	for _, want := range []string{"archivefleet console", "No communities registered", "ARCHIVEFLEET_NATS_URL", "runs in another process"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	resp, err := http.PostForm(base+"actions/trigger", url.Values{"community": {"0x02"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("action without a token: HTTP %d, want 401", resp.StatusCode)
	}
	open := DefaultConsoleConfig()
	open.HTTPAddr = "0.0.0.0:9100"
	if err := open.Validate(); err == nil || !strings.Contains(err.Error(), "INGEST_TOKEN") {
		t.Errorf("a console on 0.0.0.0 without a token validated: %v", err)
	}
	open.Token = "t"
	if err := open.Validate(); err != nil {
		t.Errorf("with a token: %v", err)
	}
}

// TestConsoleLeastPrivilege runs cmd/console's service under its own NATS
// user, with the users archivectl deploy-secrets generates for the shipped
// nats.conf: the page reads, and every action (trigger, disable, enable,
// requeue, discard) succeeds within what natsperm.Console allows.
func TestConsoleLeastPrivilege(t *testing.T) {
	secrets := t.TempDir()
	// Cheap hashes: under the race detector a costly check outlasts the
	// server's first ping.
	sec, err := deploysecrets.Generate(deploysecrets.Options{Dir: secrets, BcryptCost: 4})
	if err != nil {
		t.Fatal(err)
	}
	opts := testenv.ShippedNATSOptions(t, secrets)
	s := testenv.NATS(t, func(o *server.Options) { o.Users = opts.Users })

	// The admin sets the topology up, registers a community and a dead
	// letter is written, as archivectl and a worker do.
	nc, err := nats.Connect(s.ClientURL(), nats.UserInfo(natsperm.Admin, sec.Passwords[natsperm.Admin]))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	cfg := DefaultConsoleConfig()
	cfg.NATSURL, cfg.HTTPAddr, cfg.LogLevel = s.ClientURL(), fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), "warn"
	cfg.NATSUser, cfg.NATSPassword, cfg.Token = natsperm.Console, sec.Passwords[natsperm.Console], sec.IngestToken
	b, err := bus.Setup(t.Context(), nc, cfg.BusConfig())
	if err != nil {
		t.Fatal(err)
	}
	com := fixture.CommunityFromKey(fixture.Key(), time.Minute, uint64(time.Now().Add(-time.Hour).Unix()))
	if err := registry.New(b.Communities).Put(t.Context(), com); err != nil {
		t.Fatal(err)
	}
	id := com.ID.String()
	deadLetter := func(n int) {
		ev, _ := json.Marshal(bus.DueEvent{Community: id, From: com.Since, End: com.Since + 60, Reason: "test"})
		if _, err := b.Publish(t.Context(), bus.SubjectDLQ("due"), fmt.Sprintf("dlq:test:%d", n),
			bus.DeadLetter{Subject: bus.SubjectDue(id), Stream: bus.StreamDue, StreamSeq: uint64(n), Deliveries: 3, Reason: "test", Payload: ev}); err != nil {
			t.Fatal(err)
		}
	}
	deadLetter(1)
	deadLetter(2)

	startConsole(t, cfg)
	base := "http://" + cfg.HTTPAddr + console.Path
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(base)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(body), id) && strings.Contains(string(body), `data-seq="2"`) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the console does not show the community and the dead letters: %v", err)
		}
	}
	for _, tc := range []struct{ action, field, value, want string }{
		{"trigger", "community", id, "requested"},
		{"disable", "community", id, "disabled"},
		{"enable", "community", id, "enabled"},
		{"requeue", "seq", "1", "requeued"},
		{"discard", "seq", "2", "discarded"},
	} {
		req, _ := http.NewRequest(http.MethodPost, base+"actions/"+tc.action, strings.NewReader(url.Values{tc.field: {tc.value}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "Bearer "+sec.IngestToken)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, _ := url.Parse(resp.Header.Get("Location"))
		if resp.StatusCode != http.StatusSeeOther || !strings.Contains(loc.Query().Get("done"), tc.want) {
			t.Errorf("%s: HTTP %d, %q", tc.action, resp.StatusCode, loc.Query().Get("error"))
		}
	}
	if letters, err := bus.DeadLetters(t.Context(), b); err != nil || len(letters) != 0 {
		t.Errorf("dead letters left: %v (err %v)", letters, err)
	}
}

// startConsole runs cmd/console's service until the test ends.
func startConsole(t *testing.T, cfg ConsoleConfig) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunConsole(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("console: %v", err)
		}
	})
}
