package tracker

import (
	"encoding/binary"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/anacrolix/torrent/bencode"
)

// Limits of the tracker's HTTP server, which faces the internet: a request
// is one request line and a few headers (a scrape of 64 escaped infohashes
// is ~4.5 KB), and its answer a few KB at most.
const (
	HTTPMaxHeaderBytes    = 8 << 10
	HTTPReadHeaderTimeout = 5 * time.Second
	HTTPReadTimeout       = 10 * time.Second
	HTTPWriteTimeout      = 10 * time.Second
	HTTPIdleTimeout       = 60 * time.Second
)

// HTTPServer is a server for t on "/announce" and "/scrape" with the limits
// above: a client that sends a large or slow request is cut off instead of
// holding a connection and its buffers.
func (t *Tracker) HTTPServer() *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/announce", t)
	mux.Handle("/scrape", t)
	return &http.Server{Handler: mux, MaxHeaderBytes: HTTPMaxHeaderBytes, ReadHeaderTimeout: HTTPReadHeaderTimeout,
		ReadTimeout: HTTPReadTimeout, WriteTimeout: HTTPWriteTimeout, IdleTimeout: HTTPIdleTimeout,
		ErrorLog: slog.NewLogLogger(t.log.Handler(), slog.LevelDebug)}
}

// ServeHTTP answers "<any prefix>/announce" (BEP 3, 23, 7) and
// "<any prefix>/scrape" (BEP 48). A refused request (malformed, or for a
// torrent the fleet does not seed) gets a bencoded "failure reason" with
// status 200, as trackers answer and clients (anacrolix, aria2c,
// libtorrent) show; a registry failure gets one with status 503, so a
// proxy may try another replica.
func (t *Tracker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var scrape bool
	switch {
	case strings.HasSuffix(r.URL.Path, "/announce"):
	case strings.HasSuffix(r.URL.Path, "/scrape"):
		scrape = true
	default:
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	q, err := parseQuery(r.URL.RawQuery)
	if err != nil {
		t.countHTTPBad(scrape)
		writeBencode(w, http.StatusOK, failure(err.Error()))
		return
	}
	if scrape {
		t.serveHTTPScrape(w, r, q)
		return
	}
	src, err := t.sourceAddr(r)
	if err != nil {
		t.countHTTPBad(false)
		writeBencode(w, http.StatusOK, failure(err.Error()))
		return
	}
	a, err := parseAnnounce(q, src, t.cfg.TrustIPParam)
	if err != nil {
		t.metrics.announces.WithLabelValues("http", a.Event.String(), "bad_request").Inc()
		writeBencode(w, http.StatusOK, failure(err.Error()))
		return
	}
	resp, err := t.announce(r.Context(), "http", a)
	var bad errBadRequest
	switch {
	case errors.As(err, &bad):
		writeBencode(w, http.StatusOK, failure(bad.Error()))
		return
	case err != nil:
		writeBencode(w, http.StatusServiceUnavailable, failure("tracker unavailable, retry later"))
		return
	}
	writeBencode(w, http.StatusOK, encodeAnnounce(resp, a.Compact))
}

func (t *Tracker) countHTTPBad(scrape bool) {
	if scrape {
		t.metrics.scrapes.WithLabelValues("http", "bad_request").Inc()
	} else {
		t.metrics.announces.WithLabelValues("http", eventNone.String(), "bad_request").Inc()
	}
}

func (t *Tracker) serveHTTPScrape(w http.ResponseWriter, r *http.Request, q url.Values) {
	var hashes [][20]byte
	for _, v := range q["info_hash"] {
		if len(v) != 20 {
			t.metrics.scrapes.WithLabelValues("http", "bad_request").Inc()
			writeBencode(w, http.StatusOK, failure("info_hash must be 20 bytes, got "+strconv.Itoa(len(v))))
			return
		}
		hashes = append(hashes, [20]byte([]byte(v)))
	}
	res, err := t.scrape(r.Context(), "http", hashes)
	var bad errBadRequest
	switch {
	case errors.As(err, &bad):
		writeBencode(w, http.StatusOK, failure(bad.Error()))
		return
	case err != nil:
		writeBencode(w, http.StatusServiceUnavailable, failure("tracker unavailable, retry later"))
		return
	}
	// Torrents the tracker does not serve are left out, as opentracker does.
	files := make(map[string]scrapeResult, min(len(hashes), maxScrape))
	for i, ih := range hashes {
		if res[i].known {
			files[string(ih[:])] = res[i].scrapeResult
		}
	}
	writeBencode(w, http.StatusOK, struct {
		Files map[string]scrapeResult `bencode:"files"`
	}{files})
}

// parseQuery splits a raw query on "&" only. info_hash and peer_id are raw
// bytes, and url.ParseQuery drops every pair holding a ";", which a client
// that leaves ";" unescaped would send.
func parseQuery(raw string) (url.Values, error) {
	q := url.Values{}
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		k, err := url.QueryUnescape(k)
		if err != nil {
			return nil, badRequest("bad query: %v", err)
		}
		if v, err = url.QueryUnescape(v); err != nil {
			return nil, badRequest("bad query %s: %v", k, err)
		}
		q[k] = append(q[k], v)
	}
	return q, nil
}

// parseAnnounce reads an HTTP announce (BEP 3) made from src. Only
// info_hash, peer_id and port are required; a missing left means unknown.
func parseAnnounce(q url.Values, src netip.Addr, trustIP bool) (announceRequest, error) {
	a := announceRequest{Left: -1, NumWant: -1, Compact: q.Get("compact") != "0"}
	switch e := q.Get("event"); e {
	case "", "empty", "paused": // "empty" is BEP 3's spelling of none; BEP 21's "paused" is a regular announce
	case "started":
		a.Event = eventStarted
	case "completed":
		a.Event = eventCompleted
	case "stopped":
		a.Event = eventStopped
	default:
		return a, badRequest("unknown event %q", e)
	}
	ih, ok := q["info_hash"]
	if !ok || len(ih) != 1 || len(ih[0]) != 20 {
		return a, badRequest("info_hash must be one 20-byte value")
	}
	a.InfoHash = [20]byte([]byte(ih[0]))
	id, ok := q["peer_id"]
	if !ok || len(id) != 1 || len(id[0]) != 20 {
		return a, badRequest("peer_id must be one 20-byte value")
	}
	a.PeerID = [20]byte([]byte(id[0]))
	ps := q.Get("port")
	if ps == "" {
		return a, badRequest("missing port")
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || port == 0 {
		return a, badRequest("bad port %q", ps)
	}
	for _, f := range []struct {
		name string
		to   *int64
	}{{"left", &a.Left}, {"uploaded", &a.Uploaded}, {"downloaded", &a.Downloaded}} {
		s := q.Get(f.name)
		if s == "" {
			continue
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return a, badRequest("bad %s %q", f.name, s)
		}
		*f.to = max(n, -1)
	}
	if s := q.Get("numwant"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return a, badRequest("bad numwant %q", s)
		}
		a.NumWant = max(n, -1)
	}
	ip := src
	if trustIP {
		// anacrolix lists an "ip" per address family: take the first literal
		// (BEP 3 allows a DNS name, which would need a lookup per announce).
		for _, s := range q["ip"] {
			if p, err := netip.ParseAddr(s); err == nil {
				ip = p
				break
			}
		}
	}
	a.Addr = netip.AddrPortFrom(ip.Unmap(), uint16(port))
	return a, nil
}

// sourceAddr is the announcing host: the request's source address, or,
// from a trusted proxy, the nearest untrusted hop of X-Forwarded-For.
func (t *Tracker) sourceAddr(r *http.Request) (netip.Addr, error) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, badRequest("cannot tell your address")
	}
	ip := ap.Addr().Unmap()
	if !t.trustedProxy(ip) {
		return ip, nil
	}
	var hops []string
	for _, h := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(h, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break // spoofable garbage: keep the last hop we could trust
		}
		ip = hop.Unmap()
		if !t.trustedProxy(ip) {
			break
		}
	}
	return ip, nil
}

func (t *Tracker) trustedProxy(ip netip.Addr) bool {
	for _, p := range t.cfg.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

type failureResponse struct {
	Reason string `bencode:"failure reason"`
}

func failure(reason string) failureResponse { return failureResponse{reason} }

type httpAnnounceResponse struct {
	Complete    int `bencode:"complete"`
	Incomplete  int `bencode:"incomplete"`
	Interval    int `bencode:"interval"`
	MinInterval int `bencode:"min interval"`
	// Peers is a string of 6-byte IPv4 peers (compact, BEP 23), or a
	// list of dictPeer (BEP 3).
	Peers any `bencode:"peers"`
	// Peers6 holds 18-byte IPv6 peers (BEP 7), compact responses only.
	Peers6 string `bencode:"peers6,omitempty"`
}

// dictPeer is a BEP 3 peer without "peer id": registry ids are not always
// BitTorrent peer ids (a registered seeder's is its service id), and
// clients check the id in the handshake anyway.
type dictPeer struct {
	IP   string `bencode:"ip"`
	Port uint16 `bencode:"port"`
}

func encodeAnnounce(r announceResponse, compact bool) httpAnnounceResponse {
	out := httpAnnounceResponse{Complete: r.Complete, Incomplete: r.Incomplete,
		Interval: int(r.Interval.Seconds()), MinInterval: int(r.MinInterval.Seconds())}
	if !compact {
		peers := make([]dictPeer, 0, len(r.Peers))
		for _, p := range r.Peers {
			peers = append(peers, dictPeer{p.Addr().String(), p.Port()})
		}
		out.Peers = peers
		return out
	}
	var v4, v6 []byte
	for _, p := range r.Peers {
		if p.Addr().Is4() {
			v4 = binary.BigEndian.AppendUint16(append(v4, p.Addr().AsSlice()...), p.Port())
		} else {
			v6 = binary.BigEndian.AppendUint16(append(v6, p.Addr().AsSlice()...), p.Port())
		}
	}
	out.Peers, out.Peers6 = string(v4), string(v6)
	return out
}

func writeBencode(w http.ResponseWriter, status int, v any) {
	b, err := bencode.Marshal(v)
	if err != nil { // only our own types are encoded
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(b)
}
