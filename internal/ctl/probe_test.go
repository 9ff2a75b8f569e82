package ctl

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/natsconf"
	"github.com/archivefleet/archivefleet/internal/observe"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

func probeOnce(t *testing.T, tmp string, args ...string) (*probeRound, string, int) {
	t.Helper()
	out, errs, code := run(t, "", append([]string{"probe", "-once", "-dir", tmp, "-listen", "127.0.0.1:0",
		"-metadata-timeout", "5s", "-stall-timeout", "10s", "-timeout", "1m"}, args...)...)
	var round *probeRound
	if out != "" {
		round = new(probeRound)
		if err := json.Unmarshal([]byte(out), round); err != nil {
			t.Fatalf("probe output %q: %v", out, err)
		}
	}
	return round, errs, code
}

func probeResultOf(t *testing.T, round *probeRound, c archive.CommunityID) probeResult {
	t.Helper()
	for _, r := range round.Results {
		if r.Community == c.String() {
			return r
		}
	}
	t.Fatalf("no probe of %s in %+v", c, round)
	return probeResult{}
}

func emptyDir(t *testing.T, dir string) {
	t.Helper()
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Fatalf("%s holds %d entries after the round (%v): temp member folders left behind", dir, len(ents), err)
	}
}

// TestProbeFleet: an all-in-one fleet (embedded NATS, its tracker on)
// archives and announces community A. probe -once fetches A's announced
// magnet as a new member would and reports the three stage times, in
// order, and every message; the service mode exports them on /metrics with
// /healthz and /readyz. Community B, registered with an announcement of a
// torrent nobody seeds, fails at the metadata stage with the reason, exit
// code 1; disabled, it is skipped again. Temp folders are removed.
func TestProbeFleet(t *testing.T) {
	cfg, natsURL := startAllInOne(t, time.Second, true)
	testenv.Eventually(t, 30*time.Second, func() bool {
		_, _, code := run(t, "", "community", "list")
		return code == 0
	}, "the fleet")

	tmp := t.TempDir()

	// Nothing registered: an empty round succeeds.
	if round, errs, code := probeOnce(t, tmp); code != 0 || round.Probed != 0 {
		t.Fatalf("empty fleet: exit %d %+v: %s", code, round, errs)
	}

	// Community A: messages ingested, archived, announced.
	keyA := fixture.Key()
	a := fixture.ID(keyA)
	mustRun(t, "", "community", "add", "-private-key", "0x"+hex.EncodeToString(keyA), "-interval", "1m", "-since", "now-10m")
	now := uint64(time.Now().Unix())
	msgs := fixture.Messages{N: 80, From: now - 300, To: now - 2, Topics: []archive.Topic{registry.UniversalTopic(a)}, Size: 2000}.Make()
	var body bytes.Buffer
	writeJSONLines(&body, msgs)
	resp, err := http.Post(fmt.Sprintf("http://%s/v1/communities/%s/messages", cfg.HTTPAddr, a), "application/x-ndjson", &body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("ingest: HTTP %d", resp.StatusCode)
	}
	mustRun(t, "", "trigger", "-community", a.String())
	c := natsconf.DefaultCommon()
	c.NATSURL = natsURL
	b, err := c.Connect(context.Background(), "test", testenv.Logger())
	if err != nil {
		t.Fatal(err)
	}
	defer b.NC.Close()
	states := &state.Store{KV: b.State}
	testenv.Eventually(t, 30*time.Second, func() bool {
		an, _, err := states.GetAnnounce(context.Background(), a.String())
		bs, _, _ := states.GetBuild(context.Background(), a.String())
		return err == nil && an.Magnet != "" && bs.LastEnd >= now
	}, "A's build announced")

	round, errs, code := probeOnce(t, tmp)
	if code != 0 || round.Probed != 1 || round.Failed != 0 {
		t.Fatalf("probe of A: exit %d %+v: %s", code, round, errs)
	}
	ra := probeResultOf(t, round, a)
	if !ra.OK || ra.MetadataSeconds <= 0 || ra.IndexSeconds < ra.MetadataSeconds || ra.CompleteSeconds < ra.IndexSeconds ||
		ra.Messages != len(msgs) || ra.Archives == 0 || ra.BytesDownloaded == 0 || ra.Reason != "" {
		t.Fatalf("probe of A: %+v", ra)
	}
	t.Logf("A: metadata %.3fs, index %.3fs, complete %.3fs, %d archives, %d bytes", ra.MetadataSeconds, ra.IndexSeconds,
		ra.CompleteSeconds, ra.Archives, ra.BytesDownloaded)
	emptyDir(t, tmp)

	// The service: a round at start, its metrics on /metrics.
	probeHTTP := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	sctx, scancel := context.WithCancel(context.Background())
	var sout, serr bytes.Buffer
	sdone := make(chan int, 1)
	go func() {
		sdone <- Main(sctx, Env{Stdin: strings.NewReader(""), Stdout: &sout, Stderr: &serr}, []string{"probe", "-http", probeHTTP,
			"-every", "1h", "-dir", tmp, "-listen", "127.0.0.1:0", "-metadata-timeout", "10s", "-stall-timeout", "10s"})
	}()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + probeHTTP + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	var metrics string
	testenv.Eventually(t, 30*time.Second, func() bool {
		code, body := get("/metrics")
		metrics = body
		return code == http.StatusOK && regexp.MustCompile(`(?m)^archivefleet_probe_last_round_timestamp_seconds [1-9]`).MatchString(body)
	}, "the service's first round on /metrics")

	ca := fmt.Sprintf(`community="%s"`, a)
	metric := func(name, labels string) float64 {
		t.Helper()
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name+"{"+labels+"}") + ` (\S+)$`).FindStringSubmatch(metrics)
		if m == nil {
			t.Fatalf("/metrics lacks %s{%s}:\n%s", name, labels, metrics)
		}
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, stage := range []string{"metadata", "index", "complete"} {
		if v := metric("archivefleet_probe_seconds", ca+`,stage="`+stage+`"`); v <= 0 {
			t.Errorf("archivefleet_probe_seconds{stage=%q} = %v", stage, v)
		}
	}
	if v := metric("archivefleet_probe_last_success_timestamp_seconds", ca); v < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last success %v", v)
	}
	if metric("archivefleet_probes_total", ca+`,result="ok"`) != 1 || metric("archivefleet_probes_total", ca+`,result="failed"`) != 0 ||
		metric("archivefleet_probe_failures_total", ca+`,reason="metadata"`) != 0 {
		t.Errorf("probe counters:\n%s", metrics)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, body := get(p); code != http.StatusOK {
			t.Errorf("%s: %d %s", p, code, body)
		}
	}
	scancel()
	if code := <-sdone; code != 0 {
		t.Fatalf("probe service: exit %d: %s", code, serr.String())
	}
	emptyDir(t, tmp)

	// Community B: its announcement names a torrent nobody seeds (its x.pe
	// a closed port, no tracker). Its schedule starts tomorrow, so the fleet
	// announces nothing over it.
	keyB := fixture.Key()
	bid := fixture.ID(keyB)
	mustRun(t, "", "community", "add", "-private-key", "0x"+hex.EncodeToString(keyB), "-interval", "1h", "-since", "now+24h")
	bogus := "magnet:?xt=urn:btih:" + strings.Repeat("5b", 20) + "&dn=" + bid.String() +
		"&x.pe=" + fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	if _, err := states.Put(context.Background(), state.AnnounceKey(bid.String()),
		state.Announce{Clock: uint64(time.Now().UnixMilli()), InfoHash: strings.Repeat("5b", 20), Magnet: bogus, At: time.Now(), Sent: true}, 0); err != nil {
		t.Fatal(err)
	}
	round, errs, code = probeOnce(t, tmp)
	if code != 1 || round == nil || round.Probed != 2 || round.Failed != 1 || !strings.Contains(errs, "1 of 2 probes failed") {
		t.Fatalf("probe with B unfetchable: exit %d %+v: %s", code, round, errs)
	}
	if ra := probeResultOf(t, round, a); !ra.OK {
		t.Fatalf("A: %+v", ra)
	}
	rb := probeResultOf(t, round, bid)
	if rb.OK || rb.Reason != "metadata" || !strings.Contains(rb.Error, "no metadata for "+strings.Repeat("5b", 20)) ||
		rb.MetadataSeconds != 0 || rb.CompleteSeconds != 0 || rb.InfoHash != strings.Repeat("5b", 20) {
		t.Fatalf("B: %+v", rb)
	}
	if !strings.Contains(errs, "probe failed") || !strings.Contains(errs, "reason=metadata") {
		t.Fatalf("stderr lacks B's failure: %s", errs)
	}
	emptyDir(t, tmp)

	// B disabled: skipped, and the round succeeds again.
	mustRun(t, "", "community", "disable", "-id", bid.String())
	round, errs, code = probeOnce(t, tmp)
	if code != 0 || round.Probed != 1 || len(round.Skipped) != 1 || round.Skipped[0].Community != bid.String() || round.Skipped[0].Why != "disabled" {
		t.Fatalf("B disabled: exit %d %+v: %s", code, round, errs)
	}
}

// TestProbeMetricsDropped: the series of a community no longer probed go,
// so an alert on its last success stops.
func TestProbeMetricsDropped(t *testing.T) {
	reg := observe.NewRegistry("test")
	m := NewProbeMetrics(reg)
	now := time.Now()
	m.record(&probeResult{Community: "0xa", OK: true, MetadataSeconds: 1, IndexSeconds: 2, CompleteSeconds: 3, finished: now})
	m.record(&probeResult{Community: "0xb", Reason: "index", MetadataSeconds: 1, finished: now})
	m.endRound(&probeRound{Results: []probeResult{{Community: "0xa"}, {Community: "0xb"}}, finished: now})
	count := func(c string) (n int) {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			for _, mt := range mf.GetMetric() {
				for _, l := range mt.GetLabel() {
					if l.GetName() == "community" && l.GetValue() == c {
						n++
					}
				}
			}
		}
		return n
	}
	// a: 3 stages, bytes, 2 results, 7 reasons, last success; b: 1 stage, bytes, 2 results, 7 reasons.
	if na, nb := count("0xa"), count("0xb"); na != 3+1+2+len(probeReasons)+1 || nb != 1+1+2+len(probeReasons) {
		t.Fatalf("series: a %d, b %d", na, nb)
	}
	m.endRound(&probeRound{Results: []probeResult{{Community: "0xa"}}, finished: now})
	if na, nb := count("0xa"), count("0xb"); na == 0 || nb != 0 {
		t.Fatalf("after b's removal: a %d, b %d series", na, nb)
	}
}
