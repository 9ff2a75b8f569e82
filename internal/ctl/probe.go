package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/observe"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
)

// Probe stages, in order, and failure reasons.
const (
	probeStageMetadata = "metadata" // the torrent's info (BEP 9) arrived
	probeStageIndex    = "index"    // the index file is downloaded and decoded
	probeStageComplete = "complete" // every archive is downloaded and decoded
)

// probeReasons are the values of the reason label of
// archivefleet_probe_failures_total: the stage that failed, or magnet (the
// announced link does not parse), setup (the torrent client or temp folder),
// mismatch (the torrent is another community's) and timeout (-timeout).
var probeReasons = []string{"magnet", "setup", "metadata", "index", "archives", "mismatch", "timeout"}

// ProbeMetrics are the prober's Prometheus metrics.
type ProbeMetrics struct {
	seconds     *prometheus.GaugeVec
	bytes       *prometheus.GaugeVec
	probes      *prometheus.CounterVec
	failures    *prometheus.CounterVec
	lastSuccess *prometheus.GaugeVec
	lastRound   prometheus.Gauge
	roundSecs   prometheus.Gauge
	communities prometheus.Gauge

	mu    sync.Mutex
	known map[string]bool // communities with series
}

// NewProbeMetrics registers the prober's metrics with reg.
func NewProbeMetrics(reg prometheus.Registerer) *ProbeMetrics {
	f := promauto.With(reg)
	return &ProbeMetrics{
		seconds: f.NewGaugeVec(prometheus.GaugeOpts{Name: "archivefleet_probe_seconds",
			Help: "Seconds from the start of the community's last probe to its stage (metadata, index, complete); a stage not reached has no value."},
			[]string{"community", "stage"}),
		bytes: f.NewGaugeVec(prometheus.GaugeOpts{Name: "archivefleet_probe_downloaded_bytes",
			Help: "Piece data the community's last probe downloaded."}, []string{"community"}),
		probes: f.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_probes_total",
			Help: "Probes of a community's announced magnet, by result (ok, failed)."}, []string{"community", "result"}),
		failures: f.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_probe_failures_total",
			Help: "Failed probes, by reason: the stage that failed (metadata, index, archives), magnet, setup, mismatch or timeout."},
			[]string{"community", "reason"}),
		lastSuccess: f.NewGaugeVec(prometheus.GaugeOpts{Name: "archivefleet_probe_last_success_timestamp_seconds",
			Help: "When a probe last fetched the community's announced magnet completely (unix seconds); absent until one did."},
			[]string{"community"}),
		lastRound: f.NewGauge(prometheus.GaugeOpts{Name: "archivefleet_probe_last_round_timestamp_seconds",
			Help: "When the prober last finished a round (unix seconds)."}),
		roundSecs: f.NewGauge(prometheus.GaugeOpts{Name: "archivefleet_probe_round_seconds",
			Help: "How long the last round took."}),
		communities: f.NewGauge(prometheus.GaugeOpts{Name: "archivefleet_probe_communities",
			Help: "Communities probed in the last round (enabled, with an announced magnet)."}),
		known: map[string]bool{},
	}
}

// record sets the metrics of one probe.
func (m *ProbeMetrics) record(r *probeResult) {
	c := r.Community
	m.mu.Lock()
	if !m.known[c] {
		// Every series an alert takes an increase of starts at 0.
		m.known[c] = true
		m.probes.WithLabelValues(c, "ok")
		m.probes.WithLabelValues(c, "failed")
		for _, reason := range probeReasons {
			m.failures.WithLabelValues(c, reason)
		}
	}
	m.mu.Unlock()
	for stage, v := range map[string]float64{probeStageMetadata: r.MetadataSeconds, probeStageIndex: r.IndexSeconds, probeStageComplete: r.CompleteSeconds} {
		if v > 0 {
			m.seconds.WithLabelValues(c, stage).Set(v)
		} else {
			m.seconds.DeleteLabelValues(c, stage)
		}
	}
	m.bytes.WithLabelValues(c).Set(float64(r.BytesDownloaded))
	if r.OK {
		m.probes.WithLabelValues(c, "ok").Inc()
		m.lastSuccess.WithLabelValues(c).Set(float64(r.finished.UnixMilli()) / 1000)
		return
	}
	m.probes.WithLabelValues(c, "failed").Inc()
	m.failures.WithLabelValues(c, r.Reason).Inc()
}

// endRound drops the series of communities no longer probed (removed,
// disabled, announcement gone), so no alert fires for them.
func (m *ProbeMetrics) endRound(round *probeRound) {
	probed := map[string]bool{}
	for _, r := range round.Results {
		probed[r.Community] = true
	}
	m.mu.Lock()
	for c := range m.known {
		if !probed[c] {
			delete(m.known, c)
			for _, v := range []interface {
				DeletePartialMatch(prometheus.Labels) int
			}{m.seconds, m.bytes, m.probes, m.failures, m.lastSuccess} {
				v.DeletePartialMatch(prometheus.Labels{"community": c})
			}
		}
	}
	m.mu.Unlock()
	m.lastRound.Set(float64(round.finished.UnixMilli()) / 1000)
	m.roundSecs.Set(round.Seconds)
	m.communities.Set(float64(len(round.Results)))
}

// probeResult is one community's probe in the JSON summary.
type probeResult struct {
	Community string `json:"community"`
	Magnet    string `json:"magnet"`
	InfoHash  string `json:"infoHash,omitempty"`
	OK        bool   `json:"ok"`
	// Reason is one of probeReasons; Error says what happened.
	Reason string `json:"reason,omitempty"`
	Error  string `json:"error,omitempty"`
	// Seconds from the probe's start (its torrent client running) to each
	// stage; 0 for a stage not reached.
	MetadataSeconds  float64 `json:"metadataSeconds"`
	IndexSeconds     float64 `json:"indexSeconds"`
	CompleteSeconds  float64 `json:"completeSeconds"`
	Archives         int     `json:"archives"`
	Messages         int     `json:"messages"`
	PiecesDownloaded int     `json:"piecesDownloaded"`
	BytesDownloaded  int64   `json:"bytesDownloaded"`

	finished time.Time
}

type probeSkip struct {
	Community string `json:"community"`
	Why       string `json:"why"`
}

// probeRound is what probe -once prints.
type probeRound struct {
	Started time.Time     `json:"started"`
	Seconds float64       `json:"seconds"`
	Probed  int           `json:"probed"`
	Failed  int           `json:"failed"`
	Results []probeResult `json:"results"`
	Skipped []probeSkip   `json:"skipped"`

	finished time.Time
}

type prober struct {
	b           *bus.Bus
	metrics     *ProbeMetrics
	log         *slog.Logger
	dir         string
	listenHost  string
	listenPort  int
	dht         bool
	metaTimeout time.Duration
	stall       time.Duration
	timeout     time.Duration
	concurrency int
}

func runProbe(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "probe", "[flags]")
	url := natsFlag(fs)
	every := fs.Duration("every", 10*time.Minute, "time between the starts of rounds")
	httpAddr := fs.String("http", "127.0.0.1:9106", "address serving /metrics, /healthz and /readyz (\"\": none; not with -once)")
	dir := fs.String("dir", "", "folder for the probes' temporary member folders, each removed after its probe (default: the system's temp folder)")
	timeout := fs.Duration("timeout", 10*time.Minute, "longest a probe of one community may take")
	metaTimeout := fs.Duration("metadata-timeout", statusGoMetadataTimeout, "how long to wait for a torrent's metadata (status-go's value)")
	stall := fs.Duration("stall-timeout", 2*time.Minute, "fail a probe when no piece data arrives for this long")
	concurrency := fs.Int("concurrency", 2, "communities probed at a time")
	dht := fs.Bool("dht", false, "find peers on the mainline DHT as well as through the magnet's trackers and x.pe")
	listen := fs.String("listen", ":0", "host:port each probe's torrent client listens on (port 0: any)")
	once := fs.Bool("once", false, "run one round, print a JSON summary and exit (code 1 if a probe failed)")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	host, port, err := parseListen(*listen)
	if err != nil {
		return err
	}
	switch {
	case *every <= 0:
		return errors.New("-every must be positive")
	case *timeout <= 0 || *metaTimeout <= 0:
		return errors.New("-timeout and -metadata-timeout must be positive")
	case *concurrency < 1:
		return errors.New("-concurrency must be at least 1")
	case port != 0 && *concurrency > 1:
		return errors.New("-listen with a fixed port needs -concurrency 1")
	}
	if *dir == "" {
		*dir = os.TempDir()
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	b, err := connect(ctx, env, *url, "prober")
	if err != nil {
		return err
	}
	defer b.NC.Close()
	log := slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("service", "probe")
	reg := observe.NewRegistry("probe")
	p := &prober{b: b, metrics: NewProbeMetrics(reg), log: log, dir: *dir, listenHost: host, listenPort: port, dht: *dht,
		metaTimeout: *metaTimeout, stall: *stall, timeout: *timeout, concurrency: *concurrency}

	if *once {
		round, err := p.round(ctx)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(round); err != nil {
			return err
		}
		if round.Failed > 0 {
			return fmt.Errorf("%d of %d probes failed", round.Failed, round.Probed)
		}
		return nil
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	if *httpAddr != "" {
		srv := &observe.Server{Addr: *httpAddr, Registry: reg, Logger: log, Checks: map[string]observe.Check{"nats": b.Ready}}
		if _, err := srv.Listen(); err != nil {
			return err
		}
		go func() {
			err := srv.Serve(ctx)
			if err != nil {
				cancel()
			}
			errc <- err
		}()
	} else {
		errc <- nil
	}
	tick := time.NewTicker(*every)
	defer tick.Stop()
	for {
		if _, err := p.round(ctx); err != nil && ctx.Err() == nil {
			log.Error("probe round", "err", err)
		}
		select {
		case <-ctx.Done():
			return <-errc
		case <-tick.C:
		}
	}
}

type probeTarget struct {
	com    *registry.Community
	magnet string
}

// round probes every enabled community with an announced magnet, at most
// p.concurrency at a time, and updates the metrics. A probe cut short by
// ctx is not counted.
func (p *prober) round(ctx context.Context) (*probeRound, error) {
	round := &probeRound{Started: time.Now().UTC(), Results: []probeResult{}, Skipped: []probeSkip{}}
	coms, err := registry.New(p.b.Communities).List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list communities: %w", err)
	}
	st := &state.Store{KV: p.b.State}
	var targets []probeTarget
	for _, c := range coms {
		if c.Disabled {
			round.Skipped = append(round.Skipped, probeSkip{c.ID.String(), "disabled"})
			continue
		}
		an, _, err := st.GetAnnounce(ctx, c.ID.String())
		if err != nil {
			return nil, err
		}
		if an.Magnet == "" {
			round.Skipped = append(round.Skipped, probeSkip{c.ID.String(), "nothing announced yet"})
			continue
		}
		targets = append(targets, probeTarget{c, an.Magnet})
	}
	results := make([]probeResult, len(targets))
	sem := make(chan struct{}, p.concurrency)
	var wg sync.WaitGroup
	for i, tg := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			results[i] = p.probe(ctx, tg)
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for i := range results {
		r := &results[i]
		p.metrics.record(r)
		if r.OK {
			p.log.Info("probe ok", "community", r.Community, "infohash", r.InfoHash, "metadata_s", r.MetadataSeconds,
				"index_s", r.IndexSeconds, "complete_s", r.CompleteSeconds, "archives", r.Archives, "bytes", r.BytesDownloaded)
		} else {
			round.Failed++
			p.log.Warn("probe failed", "community", r.Community, "infohash", r.InfoHash, "reason", r.Reason, "err", r.Error)
		}
	}
	round.Results, round.Probed = results, len(results)
	round.finished = time.Now()
	round.Seconds = round.finished.Sub(round.Started).Seconds()
	p.metrics.endRound(round)
	return round, nil
}

// probe fetches a community's magnet from scratch into a temporary member
// folder, as a new member would: only the magnet's trackers and x.pe (and
// the DHT with -dht) find peers; an encrypted community's keys come from
// the registry, as a member holds them.
func (p *prober) probe(ctx context.Context, tg probeTarget) (r probeResult) {
	r = probeResult{Community: tg.com.ID.String(), Magnet: tg.magnet}
	fail := func(reason string, err error) probeResult {
		r.OK, r.Reason, r.Error, r.finished = false, reason, err.Error(), time.Now()
		return r
	}
	m, err := metainfo.ParseMagnetUri(tg.magnet)
	if err != nil {
		return fail("magnet", fmt.Errorf("announced magnet does not parse: %v", err))
	}
	r.InfoHash = m.InfoHash.HexString()
	dir, err := os.MkdirTemp(p.dir, "archivectl-probe-")
	if err != nil {
		return fail("setup", err)
	}
	defer os.RemoveAll(dir)
	var keys []archive.RatchetKey
	if tg.com.RatchetKey != nil {
		keys = append(keys, *tg.com.RatchetKey)
	}
	keys = append(keys, tg.com.OldKeys...)
	f := &fetcher{env: Env{Stdout: io.Discard, Stderr: io.Discard}, dir: dir, magnet: tg.magnet, m: m, dht: p.dht,
		stall: p.stall, timedKeys: keys, progress: newProgressLine(io.Discard, false)}
	if err := f.startClient(p.listenHost, p.listenPort, slog.New(slog.DiscardHandler)); err != nil {
		return fail("setup", err)
	}
	defer f.close()
	pctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	start := time.Now()
	reached := "" // the last stage reached
	f.onStage = func(s string) {
		d := time.Since(start).Seconds()
		switch s {
		case probeStageMetadata:
			r.MetadataSeconds = d
		case probeStageIndex:
			r.IndexSeconds = d
		}
		reached = s
	}
	res, err := f.run(pctx, p.metaTimeout)
	if res != nil {
		r.Archives, r.Messages, r.PiecesDownloaded, r.BytesDownloaded = res.Archives, res.Messages, res.PiecesDownloaded, res.BytesDownloaded
		if res.Community != r.Community && err == nil {
			err = fmt.Errorf("the torrent is community %s's", res.Community)
			return fail("mismatch", err)
		}
	}
	if err != nil {
		switch {
		case ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
			after := map[string]string{"": "before the metadata", probeStageMetadata: "after the metadata", probeStageIndex: "after the index"}[reached]
			return fail("timeout", fmt.Errorf("not complete within -timeout %v (%s)", p.timeout, after))
		case reached == "":
			return fail("metadata", err)
		case reached == probeStageMetadata:
			return fail("index", err)
		default:
			if res != nil && len(res.Skipped) > 0 {
				err = fmt.Errorf("%v; first: archive %s %s", err, shortArchiveID(res.Skipped[0].ID), res.Skipped[0].Reason)
			}
			return fail("archives", err)
		}
	}
	r.OK, r.finished = true, time.Now()
	r.CompleteSeconds = r.finished.Sub(start).Seconds()
	return r
}
