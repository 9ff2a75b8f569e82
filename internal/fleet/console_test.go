package fleet

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/console"
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
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunConsole(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("console: %v", err)
		}
	})
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
