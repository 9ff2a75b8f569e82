// Package observe serves every service's operational HTTP endpoints:
// /metrics (Prometheus), /healthz (liveness, no dependency checks, so a
// dependency blip does not restart the process) and /readyz (NATS, Redis,
// torrent client; 503 while draining).
package observe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a registry with the Go and process collectors and a
// build-info gauge.
func NewRegistry(service string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	bi := prometheus.NewGauge(prometheus.GaugeOpts{Name: "archivefleet_build_info", Help: "Always 1.",
		ConstLabels: prometheus.Labels{"service": service}})
	bi.Set(1)
	reg.MustRegister(bi)
	return reg
}

// Check is one readiness dependency.
type Check func(ctx context.Context) error

// Server is the operational HTTP server.
type Server struct {
	Addr     string
	Registry *prometheus.Registry
	Checks   map[string]Check
	// Extra handlers mounted on the same server, e.g. the ingest endpoint.
	Handlers map[string]http.Handler
	Logger   *slog.Logger

	draining atomic.Bool
	srv      *http.Server
	ln       net.Listener
}

// Drain makes /readyz fail so load balancers stop sending work.
func (s *Server) Drain() { s.draining.Store(true) }

// Listen binds the address (so callers learn the port before serving).
func (s *Server) Listen() (net.Addr, error) {
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return nil, fmt.Errorf("http listen %s: %w", s.Addr, err)
	}
	s.ln = ln
	return ln.Addr(), nil
}

// Serve serves until ctx is cancelled, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context) error {
	if s.ln == nil {
		if _, err := s.Listen(); err != nil {
			return err
		}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", s.ready)
	for p, h := range s.Handlers {
		mux.Handle(p, h)
	}
	// Requests run under a context that ends when the service stops, so a
	// long one (an ingest batch) answers with what it did instead of
	// holding the shut-down.
	base, stopRequests := context.WithCancel(context.Background())
	defer stopRequests()
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: maxHeaderBytes,
		BaseContext: func(net.Listener) context.Context { return base }}
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	if s.Logger != nil {
		s.Logger.Info("http listening", "addr", s.ln.Addr().String())
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.Drain()
	stopRequests()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		if s.Logger != nil {
			s.Logger.Warn("http requests still running at shut-down: closing their connections", "after", shutdownGrace, "err", err)
		}
		s.srv.Close()
	}
	return nil
}

// HTTP server bounds: request headers at most maxHeaderBytes; at shut-down,
// requests in flight (told to stop) get shutdownGrace to answer.
const (
	maxHeaderBytes = 64 << 10
	shutdownGrace  = 10 * time.Second
)

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		http.Error(w, "draining", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	names := make([]string, 0, len(s.Checks))
	for n := range s.Checks {
		names = append(names, n)
	}
	sort.Strings(names)
	var fails []string
	for _, n := range names {
		if err := s.Checks[n](ctx); err != nil {
			fails = append(fails, n+": "+err.Error())
		}
	}
	if len(fails) > 0 {
		http.Error(w, strings.Join(fails, "\n"), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}
