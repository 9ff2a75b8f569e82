// Package console is the operator's web console: a page served by the fleet
// that shows the communities (archived up to, last build, last announcement
// and its Waku delivery, seeders, magnet), the dead-letter queue, the Waku
// peers and the settings in force, with a timeline of the windows built,
// and runs the operator's actions (trigger a build, enable or disable a
// community, requeue or discard a dead letter). Plain html/template and a
// small embedded script that polls: no JavaScript build step.
package console

import (
	"crypto/subtle"
	"embed"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/archivefleet/archivefleet/internal/bus"
)

// Path is where the console is served.
const Path = "/console/"

// Bounds of one reply: every list the page shows is cut at these.
const (
	// PageSize is the most communities one page shows (?page=N for more).
	PageSize = 50
	// MaxDeadLetters is the most dead letters shown (the oldest first).
	MaxDeadLetters = 100
	// MaxPeers is the most Waku peers listed.
	MaxPeers = 100
	// TimelineWindows is how many of a community's intervals its timeline
	// row spans, ending now.
	TimelineWindows = 24
	// PollEvery is how often the page refreshes its live part.
	PollEvery = 3 * time.Second
	// requestTimeout bounds the NATS reads and writes of one request.
	requestTimeout = 10 * time.Second
)

//go:embed static templates
var files embed.FS

// WakuPeers is the Waku relay peer of this process, for the peer list.
type WakuPeers interface {
	Host() host.Host
	PubsubTopics() []string
	TopicPeers(pubsubTopic string) int
}

// Setting is one setting in force, as the page lists it.
type Setting struct{ Name, Value string }

// Console serves the page and its actions.
type Console struct {
	Bus *bus.Bus
	// Token is the operator token actions require (the fleet's
	// INGEST_TOKEN); empty: actions are refused.
	Token string
	// OpenReads lets anyone who reaches the listener see the page without
	// the token: set only when the listener is on loopback.
	OpenReads bool
	// Settings are the settings in force, secrets left out.
	Settings []Setting
	// Peers is this process's Waku peer; nil when the Waku edge runs
	// elsewhere.
	Peers  WakuPeers
	Logger *slog.Logger

	tmpl    *template.Template
	actions *prometheus.CounterVec
}

// New checks c and registers the console's metrics on reg.
func New(c Console, reg prometheus.Registerer) *Console {
	c.tmpl = template.Must(template.New("").Funcs(funcs).ParseFS(files, "templates/*.html"))
	c.actions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "archivefleet_console_actions_total",
		Help: "Operator actions through the console, by action (trigger, enable, disable, requeue, discard) and result (ok, failed, unauthorized, cross_origin)."},
		[]string{"action", "result"})
	if reg != nil {
		reg.MustRegister(c.actions)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return &c
}

// Handler serves the console under Path.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(files, "static")
	mux.Handle("GET "+Path+"static/", http.StripPrefix(Path+"static/", http.FileServerFS(static)))
	mux.HandleFunc("GET "+Path+"{$}", c.read(c.page))
	mux.HandleFunc("GET "+Path+"live", c.read(c.live))
	actions := http.NewServeMux()
	for name, fn := range map[string]func(*http.Request) (string, error){"trigger": c.trigger, "enable": c.enable, "disable": c.disable,
		"requeue": c.requeue, "discard": c.discard} {
		actions.HandleFunc("POST "+Path+"actions/"+name, c.action(name, fn))
	}
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, Path+"actions/")
		c.actions.WithLabelValues(name, "cross_origin").Inc()
		c.Logger.Warn("console action refused: cross-origin request", "action", name, "remote", r.RemoteAddr,
			"origin", r.Header.Get("Origin"), "sec_fetch_site", r.Header.Get("Sec-Fetch-Site"))
		http.Error(w, "cross-origin request refused", http.StatusForbidden)
	}))
	mux.Handle("POST "+Path+"actions/", cop.Handler(actions))
	return securityHeaders(mux)
}

// securityHeaders keeps the page out of other sites' frames and its
// scripts to its own.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

// tokenOf is the token a request carries: the form's token field, a
// bearer token, or a basic-auth password (the browser's own prompt), with
// the basic-auth user as who the operator says they are.
func tokenOf(r *http.Request) (token, user string) {
	if t := r.PostFormValue("token"); t != "" {
		return t, r.PostFormValue("operator")
	}
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return t, ""
	}
	if u, p, ok := r.BasicAuth(); ok {
		return p, u
	}
	return "", ""
}

// authorized reports whether r carries the operator token.
func (c *Console) authorized(r *http.Request) bool {
	t, _ := tokenOf(r)
	return c.Token != "" && subtle.ConstantTimeCompare([]byte(t), []byte(c.Token)) == 1
}

// read lets a read through when reads are open (loopback) or the request
// carries the token; otherwise the browser is asked for it (basic auth:
// any user name, the token as password).
func (c *Console) read(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !c.OpenReads && !c.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Basic realm="archivefleet console (password: the operator token)"`)
			http.Error(w, "the operator token is required", http.StatusUnauthorized)
			return
		}
		h(w, r)
	}
}
