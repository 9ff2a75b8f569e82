package tracker

import (
	"cmp"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/archivefleet/archivefleet/internal/bus"
)

// DefaultInterval is the announce interval the tracker tells clients, and
// how often a service registering its own peers must register again: a
// third of the bucket's TTL, so a peer survives two missed announces.
const DefaultInterval = bus.TrackerPeersTTL / 3

// Config tunes the tracker. Zero values take the defaults.
type Config struct {
	// Interval is the announce interval told to clients; at most half of
	// bus.TrackerPeersTTL, or peers expire between two announces.
	// Default DefaultInterval.
	Interval time.Duration
	// MinInterval is the shortest interval clients may announce at
	// ("min interval"). Default one minute.
	MinInterval time.Duration
	// NumWant is how many peers an announce gets when it does not say
	// (default 50); MaxNumWant caps what it may ask for (default 200).
	NumWant    int
	MaxNumWant int
	// TrustIPParam takes a peer's address from its announce's "ip"
	// parameter instead of where the request came from. Only for a tracker
	// whose every client is trusted: otherwise anyone can point a swarm at
	// any host.
	TrustIPParam bool
	// TrustedProxies are the reverse proxies (load balancers) whose
	// X-Forwarded-For names the client. A request from anywhere else is
	// taken at its source address.
	TrustedProxies []netip.Prefix
	// UDPSecret keys the UDP connection ids (BEP 15). Replicas behind one
	// UDP address without per-client affinity need the same secret; empty
	// means a random one per process.
	UDPSecret []byte
	// MaxSwarmPeers caps the announced peers stored per torrent (default
	// DefaultMaxSwarmPeers): one more still gets peers, but is not stored.
	// Fleet seeders' registrations are neither counted nor capped.
	MaxSwarmPeers int
	// MaxPeers caps the announced peers stored for all torrents (default
	// DefaultMaxPeers), so they fill at most part of the bucket
	// (bus.TrackerPeersMaxBytes) and seeders' registrations still fit.
	MaxPeers int
}

// Defaults of Config's caps. An announced peer takes ~180 bytes in the
// bucket (at most ~250 for an IPv6 key and value) and ~450 in a process's
// view, so DefaultMaxPeers keeps announces within ~24 MiB of the bucket's
// 64 MiB and ~45 MiB of memory.
const (
	DefaultMaxSwarmPeers = 2000
	DefaultMaxPeers      = 100_000
)

// Defaults of the announce answers.
const (
	DefaultMinInterval = time.Minute
	DefaultNumWant     = 50
	DefaultMaxNumWant  = 200
)

// withDefaults returns c with every zero field set to its default (a new
// random UDP secret included), the minimum interval and the default
// number of peers bounded by the interval and the maximum.
func (c Config) withDefaults() Config {
	c.Interval = cmp.Or(c.Interval, DefaultInterval)
	c.MinInterval = cmp.Or(c.MinInterval, DefaultMinInterval)
	c.NumWant = cmp.Or(c.NumWant, DefaultNumWant)
	c.MaxNumWant = cmp.Or(c.MaxNumWant, DefaultMaxNumWant)
	c.MaxSwarmPeers = cmp.Or(c.MaxSwarmPeers, DefaultMaxSwarmPeers)
	c.MaxPeers = cmp.Or(c.MaxPeers, DefaultMaxPeers)
	c.MinInterval = min(c.MinInterval, c.Interval)
	c.NumWant = min(c.NumWant, c.MaxNumWant)
	if len(c.UDPSecret) == 0 {
		c.UDPSecret = make([]byte, 32)
		crand.Read(c.UDPSecret)
	}
	return c
}

// validate reports a setting no default can fix.
func (c Config) validate() error {
	if c.Interval < time.Second || c.Interval > bus.TrackerPeersTTL/2 {
		return fmt.Errorf("tracker: interval %v must be between 1s and half the peer TTL (%v)", c.Interval, bus.TrackerPeersTTL/2)
	}
	return nil
}

// Tracker answers announces and scrapes for the torrents the fleet seeds,
// from its view of the Registry, which Run keeps. It is an http.Handler for
// "<prefix>/announce" and "<prefix>/scrape" (clients derive the scrape URL
// from the announce URL), and serves UDP with ServeUDP.
type Tracker struct {
	reg     *Registry
	view    *view
	cfg     Config
	log     *slog.Logger
	metrics metrics
}

type metrics struct {
	announces *prometheus.CounterVec
	returned  prometheus.Histogram
	scrapes   *prometheus.CounterVec
	notStored *prometheus.CounterVec
	skipped   prometheus.Counter
}

// New returns a tracker on r and registers its metrics on reg.
func New(r *Registry, cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Tracker, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	f := promauto.With(reg)
	t := &Tracker{reg: r, view: newView(), cfg: cfg, log: log.With("component", "tracker"), metrics: metrics{
		announces: f.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_tracker_announces_total",
			Help: "Tracker announces by transport (http, udp), event (started, completed, stopped, none) and result " +
				"(ok, bad_request, unregistered: a torrent no fleet seeder is registered for, error)."},
			[]string{"transport", "event", "result"}),
		returned: f.NewHistogram(prometheus.HistogramOpts{Name: "archivefleet_tracker_announce_peers",
			Help: "Peers returned per successful announce.", Buckets: []float64{0, 1, 2, 5, 10, 20, 50, 100, 200}}),
		scrapes: f.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_tracker_scrapes_total",
			Help: "Tracker scrapes by transport and result (ok, bad_request, error)."}, []string{"transport", "result"}),
		notStored: f.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_tracker_peers_not_stored_total",
			Help: "Announced new peers answered but not stored, by reason (swarm_full, tracker_full, bucket_full)."}, []string{"reason"}),
		skipped: f.NewCounter(prometheus.CounterOpts{Name: "archivefleet_tracker_rewrites_skipped_total",
			Help: "Announces of a peer stored unchanged less than the min interval before, not written again."}),
	}}
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "archivefleet_tracker_swarms",
		Help: "Torrents the tracker serves (a fleet seeder is registered)."}, func() float64 {
		t.view.mu.Lock()
		defer t.view.mu.Unlock()
		return float64(t.view.served)
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "archivefleet_tracker_peers",
		Help: "Announced peers' entries in the tracker's view of the bucket (MaxPeers caps them)."}, func() float64 {
		t.view.mu.Lock()
		defer t.view.mu.Unlock()
		return float64(t.view.announced)
	})
	return t, nil
}

// Run keeps the tracker's view of the registry (one watch on its bucket)
// until ctx ends; announces and scrapes wait for its first load. It
// returns an error if the watch fails.
func (t *Tracker) Run(ctx context.Context) error {
	return t.view.run(ctx, t.reg.kv)
}

// event is an announce's event (BEP 3). Its values are UDP's (BEP 15).
type event int32

const (
	eventNone event = iota
	eventCompleted
	eventStarted
	eventStopped
)

func (e event) String() string {
	switch e {
	case eventCompleted:
		return "completed"
	case eventStarted:
		return "started"
	case eventStopped:
		return "stopped"
	default:
		return "none"
	}
}

// announceRequest is a parsed announce, whatever its transport.
type announceRequest struct {
	InfoHash [20]byte
	PeerID   [20]byte
	// Addr is where the peer takes connections: the request's source
	// address (or trusted "ip") with the announced port.
	Addr                 netip.AddrPort
	Event                event
	Left                 int64 // -1: unknown (a magnet without its info yet)
	Uploaded, Downloaded int64
	NumWant              int // -1: the tracker's default
	// Compact asks for compact peer lists (HTTP; UDP's always are).
	Compact bool
	// Family, 4 or 6, limits the peers to one address family (UDP
	// responses hold one); 0 returns both.
	Family int
}

// announceResponse is what an announce gets back.
type announceResponse struct {
	Interval, MinInterval time.Duration
	Complete, Incomplete  int
	Peers                 []netip.AddrPort
}

// errBadRequest marks an announce or scrape the tracker refuses; its text
// goes back to the client as the failure reason.
type errBadRequest string

func (e errBadRequest) Error() string { return string(e) }

func badRequest(format string, args ...any) error { return errBadRequest(fmt.Sprintf(format, args...)) }

// errUnregistered refuses an announce for a torrent no fleet seeder is
// registered for, in opentracker's words for its whitelist.
var errUnregistered = errBadRequest("Requested download is not authorized for use with this tracker.")

// result labels an outcome for the metrics.
func result(err error) string {
	var bad errBadRequest
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, errUnregistered):
		return "unregistered"
	case errors.As(err, &bad):
		return "bad_request"
	default:
		return "error"
	}
}

// requestTimeout bounds the work of one announce or scrape, waiting for
// the view's first load and the write to the bucket included.
const requestTimeout = 5 * time.Second

// sweepPerRequest is how many expired entries an announce drops on the way,
// so answers stay fresh between the watch loop's sweeps at a fixed cost.
const sweepPerRequest = 16

// announce records a (parsed) announce and picks the peers it gets.
func (t *Tracker) announce(ctx context.Context, transport string, a announceRequest) (announceResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := t.serveAnnounce(ctx, a)
	t.metrics.announces.WithLabelValues(transport, a.Event.String(), result(err)).Inc()
	switch result(err) {
	case "ok":
		t.metrics.returned.Observe(float64(len(resp.Peers)))
	case "error":
		t.log.Warn("announce failed", "transport", transport, "infohash", hex.EncodeToString(a.InfoHash[:]), "peer", a.Addr, "err", err)
	}
	return resp, err
}

// write is what an announce does to the bucket.
type write int

const (
	writeNone write = iota
	writePut
	writeDelete
)

// serveAnnounce answers from the view: only for a torrent a fleet seeder
// is registered for, with counts and a sample that cost the same for any
// swarm. The bucket is written when the peer is new (within the caps),
// changed, stopped, or last written a min interval ago or more.
func (t *Tracker) serveAnnounce(ctx context.Context, a announceRequest) (announceResponse, error) {
	resp := announceResponse{Interval: t.cfg.Interval, MinInterval: t.cfg.MinInterval}
	if err := t.view.wait(ctx); err != nil {
		return resp, err
	}
	v, id, seeder := t.view, addrID(a.Addr), a.Left == 0
	v.mu.Lock()
	now := v.now()
	v.expire(now, sweepPerRequest)
	sw := v.allowed(a.InfoHash)
	if sw == nil {
		v.mu.Unlock()
		return resp, errUnregistered
	}
	e := sw.entries[id]
	op, reserved := writeNone, false
	switch {
	case a.Event == eventStopped:
		if e != nil && e.live {
			op = writeDelete
		}
	case e != nil && e.live && e.seeder == seeder && e.addr == a.Addr && now.Sub(e.stored) < t.cfg.MinInterval:
		t.metrics.skipped.Inc()
	case e != nil:
		op = writePut // a rewrite takes no more room
	case sw.announced+sw.pending >= t.cfg.MaxSwarmPeers:
		t.metrics.notStored.WithLabelValues("swarm_full").Inc()
	case v.announced+v.pending >= t.cfg.MaxPeers:
		t.metrics.notStored.WithLabelValues("tracker_full").Inc()
	default:
		// Held until the write is applied, so concurrent announces
		// cannot all pass the caps.
		op, reserved = writePut, true
		sw.pending++
		v.pending++
	}
	v.mu.Unlock()

	var (
		value []byte
		rev   uint64
		err   error
	)
	switch op {
	case writePut:
		value, rev, err = t.reg.put(ctx, a.InfoHash, id, a.Addr, seeder)
		if isBucketFull(err) {
			t.metrics.notStored.WithLabelValues("bucket_full").Inc()
			t.log.Warn("tracker bucket full: peer answered but not stored", "infohash", hex.EncodeToString(a.InfoHash[:]), "err", err)
			op, err = writeNone, nil
		}
	case writeDelete:
		err = t.reg.Remove(ctx, a.InfoHash, id)
	}

	v.mu.Lock()
	defer v.mu.Unlock()
	if reserved {
		sw.pending--
		v.pending--
		defer v.dropIfEmpty(sw)
	}
	if err != nil {
		return resp, err
	}
	switch op {
	case writePut:
		v.apply(a.InfoHash, id, rev, v.now(), false, value)
	case writeDelete:
		v.markDeleted(a.InfoHash, id)
	}
	if a.Event == eventStopped {
		return resp, nil // a leaving peer wants no peers
	}
	if sw = v.swarms[a.InfoHash]; sw == nil {
		return resp, nil
	}
	want := a.NumWant
	if want < 0 {
		want = t.cfg.NumWant
	}
	resp.Complete, resp.Incomplete = sw.counts()
	resp.Peers = sw.pick(a.Addr, seeder, a.Family, min(want, t.cfg.MaxNumWant))
	return resp, nil
}

// isBucketFull tells a write refused for the bucket's MaxBytes.
func isBucketFull(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && strings.Contains(apiErr.Description, "maximum bytes")
}

// maxScrape bounds the distinct torrents of one scrape (opentracker's
// OT_MAXMULTISCRAPE_COUNT); a scrape naming more is refused whole, so an
// answer is never silently partial.
const maxScrape = 64

// scrapeResult counts one torrent's swarm (BEP 48). Downloaded (completed
// downloads ever) is not kept, so it is always 0.
type scrapeResult struct {
	Complete   int `bencode:"complete"`
	Downloaded int `bencode:"downloaded"`
	Incomplete int `bencode:"incomplete"`
}

// scrapeAnswer is one requested torrent's result; known is false for a
// torrent the tracker does not serve (left out over HTTP, zeros over UDP).
type scrapeAnswer struct {
	scrapeResult
	known bool
}

func (t *Tracker) scrape(ctx context.Context, transport string, hashes [][20]byte) ([]scrapeAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	res, err := t.serveScrape(ctx, hashes)
	t.metrics.scrapes.WithLabelValues(transport, result(err)).Inc()
	if err != nil && result(err) == "error" {
		t.log.Warn("scrape failed", "transport", transport, "err", err)
	}
	return res, err
}

// serveScrape answers each requested torrent from the view's counts, once
// per distinct infohash: O(len(hashes)), whatever the swarms hold.
func (t *Tracker) serveScrape(ctx context.Context, hashes [][20]byte) ([]scrapeAnswer, error) {
	if len(hashes) == 0 {
		return nil, badRequest("scrape needs info_hash: a full scrape is not served")
	}
	first := make(map[[20]byte]int, min(len(hashes), maxScrape+1))
	for i, ih := range hashes {
		if _, ok := first[ih]; !ok {
			if len(first) == maxScrape {
				return nil, badRequest("at most %d distinct info_hash per scrape", maxScrape)
			}
			first[ih] = i
		}
	}
	if err := t.view.wait(ctx); err != nil {
		return nil, err
	}
	out := make([]scrapeAnswer, len(hashes))
	t.view.mu.Lock()
	for ih, i := range first {
		if sw := t.view.allowed(ih); sw != nil {
			out[i].known = true
			out[i].Complete, out[i].Incomplete = sw.counts()
		}
	}
	t.view.mu.Unlock()
	for i, ih := range hashes {
		out[i] = out[first[ih]]
	}
	return out, nil
}
