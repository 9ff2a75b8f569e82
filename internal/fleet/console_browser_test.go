package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/console"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// ScreenshotEnv, set to 1, makes TestConsoleInBrowser write the page to
// docs/console.png (the README's picture).
const ScreenshotEnv = "ARCHIVEFLEET_SCREENSHOT"

// consoleToken is the operator token of the browser test's fleet.
const consoleToken = "console-test-token"

// TestConsoleInBrowser drives headless chromium (Debian's package, through
// the DevTools protocol) against the all-in-one: the console lists a
// registered community, shows its build and announcement after the
// operator triggers one, requeues a dead letter and shows it built, and a
// cross-site form posting to an action (token included) is refused with
// 403. Every wait is on a condition the page shows.
func TestConsoleInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the fleet and chromium")
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium not found: install it (Debian/Ubuntu: apt-get install chromium; scripts/test does) or run with -short")
	}
	cfg := DefaultAllInOneConfig()
	cfg.DataDir, cfg.NATSPort = t.TempDir(), testenv.FreePort(t)
	cfg.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg.Demo, cfg.Settle, cfg.Tick, cfg.IngestToken = false, time.Second, 100*time.Millisecond, consoleToken
	var logs testenv.Buffer
	cfg.logOut = &logs
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("fleet log:\n%s", logs.String())
		}
	})
	ctx := startAllInOne(t, cfg)
	b := fleetBus(t, ctx, cfg)
	base := "http://" + cfg.HTTPAddr + console.Path

	// A community with five minutes of messages, registered as
	// archivectl community add does.
	key := fixture.Key()
	now := time.Now()
	com := fixture.CommunityFromKey(key, time.Minute, uint64(now.Add(-5*time.Minute).Unix()))
	id := com.ID.String()
	if _, err := registry.NewKeys(b.CommunityKeys).Put(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := registry.New(b.Communities).Put(ctx, com); err != nil {
		t.Fatal(err)
	}
	// send ingests n messages from the last minute: a build after it has
	// new archives, so a new torrent is seeded and announced.
	send := func(n int) {
		t.Helper()
		now := uint64(time.Now().Unix())
		ingest(t, cfg.HTTPAddr, id, fixture.Messages{N: n, From: now - 59, To: now, Random: true,
			Topics: []archive.Topic{registry.UniversalTopic(com.ID)}, Signers: [][]byte{fixture.Signer(key)}}.Make())
	}
	send(20)

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.WindowSize(1400, 1000), chromedp.Flag("disable-dev-shm-usage", true))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	if err := chromedp.Do(bctx); err != nil { // starts the browser, under no timeout (see chromedp.Run)
		t.Fatalf("chromium: %v", err)
	}
	// The whole browser session; each step below waits for what the page shows.
	bctx, tcancel := context.WithTimeout(bctx, 4*time.Minute)
	defer tcancel()
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	// poll waits until expr is true on the page. An action's click
	// navigates: a poll begun on the page it left ends with it, and is
	// asked again on the page the POST answered.
	poll := func(what, expr string) {
		t.Helper()
		for deadline := time.Now().Add(2 * time.Minute); ; {
			_, err := chromedp.Run(bctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(time.Until(deadline))))
			if err == nil {
				return
			}
			if time.Now().After(deadline) || bctx.Err() != nil {
				t.Fatalf("%s: %v", what, err)
			}
		}
	}
	row := `tr.community[data-community="` + id + `"]`
	// said is true once the page (after an action's redirect) says what.
	said := func(what string) string {
		return fmt.Sprintf(`(() => { const d = document.querySelector("#done"); return d !== null && d.textContent.includes(%q); })()`, what)
	}
	// builtSince is true once the row's "archived up to" and its last
	// announcement have reached at (UTC date times compare as text) and
	// it has a magnet.
	builtSince := func(at time.Time) string {
		s := at.UTC().Format(time.DateTime)
		return fmt.Sprintf(`(() => { const r = document.querySelector(%q); if (!r) return false;
			const a = r.querySelector("td.archived").textContent.trim(), n = r.querySelector("td.announcement").textContent.trim();
			return a >= %q && n >= %q && r.querySelector("td.magnet input") !== null; })()`, row, s, s)
	}

	do("the page lists the community", chromedp.Navigate(base), chromedp.WaitVisible(chromedp.CSS(row)))
	do("the operator's token", chromedp.SendKeys(chromedp.CSS("#token"), consoleToken), chromedp.SendKeys(chromedp.CSS("#operator"), "browser-test"))

	// The scheduler catches up on the closed windows first; the trigger
	// then archives the open one, with new messages in it.
	poll("the closed windows built", builtSince(now.Add(-time.Minute)))
	send(10)
	triggered := time.Now().Truncate(time.Second)
	do("trigger a build", chromedp.Click(chromedp.CSS(row+` form[action="actions/trigger"] button`)))
	poll("the trigger's answer", said("requested"))
	poll("the build and announcement shown", builtSince(triggered))

	// A dead letter: a due event past the build, as the archiver's worker
	// writes one when it gives up.
	bs, _, err := (&state.Store{KV: b.State}).GetBuild(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	send(10)
	end := time.Now().Add(time.Second).Truncate(time.Second)
	ev, _ := json.Marshal(bus.DueEvent{Community: id, From: bs.LastEnd, End: uint64(end.Unix()), Reason: "test"})
	dl := bus.DeadLetter{Subject: bus.SubjectDue(id), Stream: bus.StreamDue, StreamSeq: 1, Deliveries: 5,
		Reason: "test: lock lost five times", Payload: ev}
	if _, err := b.Publish(ctx, bus.SubjectDLQ("archiver"), "dlq:test:1", dl); err != nil {
		t.Fatal(err)
	}
	letter := `tr.dead-letter`
	// From the page's own address: the trigger's answer is gone.
	do("the dead letter listed", chromedp.Navigate(base), chromedp.WaitVisible(chromedp.CSS(letter)))
	if got := text(letter + " td.reason"); got != dl.Reason {
		t.Fatalf("dead letter reason %q, want %q", got, dl.Reason)
	}
	// The picture for the README: a build, an announcement, a dead letter.
	if os.Getenv(ScreenshotEnv) == "1" {
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("..", "..", "docs", "console.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	do("requeue it", chromedp.Click(chromedp.CSS(letter+` form[action="actions/requeue"] button`)))
	poll("the requeue's answer", said("requeued"))
	do("the dead letter gone", chromedp.WaitNotPresent(chromedp.CSS(letter)))
	poll("the requeued event built", builtSince(end))

	// Another site's page whose form posts to an action, token and all (as
	// if the attacker knew it): the browser marks it cross-site and the
	// console refuses it.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><form method="post" action="%sactions/disable"><input name="community" value="%s">`+
			`<input name="token" value="%s"><button id="go">go</button></form>`, base, id, consoleToken)
	}))
	defer evil.Close()
	do("a cross-site POST refused", chromedp.Navigate(strings.Replace(evil.URL, "127.0.0.1", "localhost", 1)),
		chromedp.Click(chromedp.CSS("#go")))
	poll("the refusal shown", `document.body !== null && document.body.innerText.includes("cross-origin request refused")`)
	if got, err := registry.New(b.Communities).Get(ctx, com.ID); err != nil || got.Disabled {
		t.Fatalf("the cross-site POST disabled the community (err %v)", err)
	}
	// The same from a plain client, to read the status code.
	req, _ := http.NewRequest(http.MethodPost, base+"actions/disable", strings.NewReader("community="+id+"&token="+consoleToken))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site POST: HTTP %d, want 403", resp.StatusCode)
	}
	for _, want := range []string{`"action":"trigger"`, `"action":"requeue"`, `"operator":"browser-test"`, "console action refused: cross-origin request"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s", want)
		}
	}
}

// fleetBus connects to the all-in-one's NATS once it is up.
func fleetBus(t *testing.T, ctx context.Context, cfg AllInOneConfig) *bus.Bus {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("fleet's NATS not up")
		}
		nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", cfg.NATSPort))
		if err != nil {
			continue
		}
		b, err := bus.Setup(ctx, nc, cfg.BusConfig())
		if err != nil {
			nc.Close()
			continue
		}
		t.Cleanup(nc.Close)
		return b
	}
}

// ingest posts msgs to the fleet's HTTP ingest once it listens.
func ingest(t *testing.T, addr, id string, msgs []archive.Message) {
	t.Helper()
	var body bytes.Buffer
	for _, m := range msgs {
		json.NewEncoder(&body).Encode(m)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/communities/"+id+"/messages", bytes.NewReader(body.Bytes()))
		req.Header.Set("Content-Type", "application/x-ndjson")
		req.Header.Set("Authorization", "Bearer "+consoleToken)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			t.Fatalf("ingest: HTTP %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			t.Fatalf("ingest: %v", err)
		}
	}
}
