package tracker

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"time"

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
}

func (c Config) withDefaults() (Config, error) {
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.MinInterval == 0 {
		c.MinInterval = time.Minute
	}
	if c.NumWant == 0 {
		c.NumWant = 50
	}
	if c.MaxNumWant == 0 {
		c.MaxNumWant = 200
	}
	if c.Interval < time.Second || c.Interval > bus.TrackerPeersTTL/2 {
		return c, fmt.Errorf("tracker: interval %v must be between 1s and half the peer TTL (%v)", c.Interval, bus.TrackerPeersTTL/2)
	}
	c.MinInterval = min(c.MinInterval, c.Interval)
	c.NumWant = min(c.NumWant, c.MaxNumWant)
	if len(c.UDPSecret) == 0 {
		c.UDPSecret = make([]byte, 32)
		crand.Read(c.UDPSecret)
	}
	return c, nil
}

// Tracker answers announces and scrapes from the Registry. It is an
// http.Handler for "<prefix>/announce" and "<prefix>/scrape" (clients derive
// the scrape URL from the announce URL), and serves UDP with ServeUDP.
type Tracker struct {
	reg     *Registry
	cfg     Config
	log     *slog.Logger
	metrics metrics
}

type metrics struct {
	announces *prometheus.CounterVec
	returned  prometheus.Histogram
	scrapes   *prometheus.CounterVec
}

// New returns a tracker on r and registers its metrics on reg.
func New(r *Registry, cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Tracker, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	f := promauto.With(reg)
	return &Tracker{reg: r, cfg: cfg, log: log.With("component", "tracker"), metrics: metrics{
		announces: f.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_tracker_announces_total",
			Help: "Tracker announces by transport (http, udp), event (started, completed, stopped, none) and result (ok, bad_request, error)."},
			[]string{"transport", "event", "result"}),
		returned: f.NewHistogram(prometheus.HistogramOpts{Name: "archivefleet_tracker_announce_peers",
			Help: "Peers returned per successful announce.", Buckets: []float64{0, 1, 2, 5, 10, 20, 50, 100, 200}}),
		scrapes: f.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_tracker_scrapes_total",
			Help: "Tracker scrapes by transport and result (ok, bad_request, error)."}, []string{"transport", "result"}),
	}}, nil
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

// result labels an outcome for the metrics.
func result(err error) string {
	var bad errBadRequest
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &bad):
		return "bad_request"
	default:
		return "error"
	}
}

// announce records a (parsed) announce and picks the peers it gets.
func (t *Tracker) announce(ctx context.Context, transport string, a announceRequest) (announceResponse, error) {
	resp, err := t.serveAnnounce(ctx, a)
	t.metrics.announces.WithLabelValues(transport, a.Event.String(), result(err)).Inc()
	if err != nil {
		t.log.Warn("announce failed", "transport", transport, "infohash", hex.EncodeToString(a.InfoHash[:]), "peer", a.Addr, "err", err)
		return resp, err
	}
	t.metrics.returned.Observe(float64(len(resp.Peers)))
	return resp, nil
}

func (t *Tracker) serveAnnounce(ctx context.Context, a announceRequest) (announceResponse, error) {
	id := hex.EncodeToString(a.PeerID[:])
	resp := announceResponse{Interval: t.cfg.Interval, MinInterval: t.cfg.MinInterval}
	if a.Event == eventStopped {
		// A leaving peer wants no peers: skip reading the swarm.
		return resp, t.reg.Remove(ctx, a.InfoHash, id)
	}
	seeder := a.Left == 0
	if err := t.reg.Register(ctx, a.InfoHash, id, a.Addr, seeder); err != nil {
		return resp, err
	}
	peers, err := t.reg.Peers(ctx, a.InfoHash)
	if err != nil {
		return resp, err
	}
	want := a.NumWant
	if want < 0 {
		want = t.cfg.NumWant
	}
	resp.Peers, resp.Complete, resp.Incomplete = pick(peers, id, a.Addr, seeder, a.Family, min(want, t.cfg.MaxNumWant))
	return resp, nil
}

// pick chooses up to want peers for the announcing peer (id at self),
// never itself, each group shuffled so the load spreads: a leecher gets
// seeders first (they have every piece), a seeder leechers first (two
// seeders have nothing to trade) but seeders too, since "left=0" does not
// always mean a seeder: aria2c sends it while it fetches a magnet's
// metadata, and then needs the seeders. family 4 or 6 keeps that family
// only. complete and incomplete count the whole swarm.
func pick(peers []Peer, id string, self netip.AddrPort, seeder bool, family, want int) (out []netip.AddrPort, complete, incomplete int) {
	var seeders, leechers []netip.AddrPort
	for _, p := range peers {
		if p.Seeder {
			complete++
		} else {
			incomplete++
		}
		if p.ID == id || p.Addr == self || family == 4 && !p.Addr.Addr().Is4() || family == 6 && p.Addr.Addr().Is4() {
			continue
		}
		if p.Seeder {
			seeders = append(seeders, p.Addr)
		} else {
			leechers = append(leechers, p.Addr)
		}
	}
	rand.Shuffle(len(seeders), func(i, j int) { seeders[i], seeders[j] = seeders[j], seeders[i] })
	rand.Shuffle(len(leechers), func(i, j int) { leechers[i], leechers[j] = leechers[j], leechers[i] })
	if seeder {
		out = append(leechers, seeders...)
	} else {
		out = append(seeders, leechers...)
	}
	if len(out) > want {
		out = out[:want]
	}
	return out, complete, incomplete
}

// maxScrape bounds the torrents of one scrape: each costs a registry read.
const maxScrape = 64

// scrapeResult counts one torrent's swarm (BEP 48). Downloaded (completed
// downloads ever) is not kept, so it is always 0.
type scrapeResult struct {
	Complete   int `bencode:"complete"`
	Downloaded int `bencode:"downloaded"`
	Incomplete int `bencode:"incomplete"`
}

func (t *Tracker) scrape(ctx context.Context, transport string, hashes [][20]byte) ([]scrapeResult, error) {
	res, err := t.serveScrape(ctx, hashes)
	t.metrics.scrapes.WithLabelValues(transport, result(err)).Inc()
	if err != nil && result(err) == "error" {
		t.log.Warn("scrape failed", "transport", transport, "err", err)
	}
	return res, err
}

func (t *Tracker) serveScrape(ctx context.Context, hashes [][20]byte) ([]scrapeResult, error) {
	if len(hashes) == 0 {
		return nil, badRequest("scrape needs info_hash: a full scrape is not served")
	}
	if len(hashes) > maxScrape {
		return nil, badRequest("at most %d info_hash per scrape", maxScrape)
	}
	out := make([]scrapeResult, len(hashes))
	for i, ih := range hashes {
		peers, err := t.reg.Peers(ctx, ih)
		if err != nil {
			return nil, err
		}
		for _, p := range peers {
			if p.Seeder {
				out[i].Complete++
			} else {
				out[i].Incomplete++
			}
		}
	}
	return out, nil
}
