package tracker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/archivefleet/archivefleet/internal/bus"
)

// Server is the fleet tracker open on one port: HTTP (/announce, /scrape)
// on TCP and BEP 15 on UDP, answering from the swarm shared in NATS (any
// replica answers for every torrent the fleet's seeders are registered
// for). It runs in the seeder and the all-in-one.
type Server struct {
	// AnnounceURL is http://<listen address>/announce; UDPURL the UDP one.
	AnnounceURL, UDPURL string

	t   *Tracker
	ln  net.Listener
	pc  net.PacketConn
	srv *http.Server
}

// Listen opens the tracker on addr (TCP and UDP at the same port).
func Listen(b *bus.Bus, addr string, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	t, err := New(NewRegistry(b), Config{}, log, reg)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("tracker: listen %s: %w", addr, err)
	}
	pc, err := net.ListenPacket("udp", ln.Addr().String())
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("tracker: listen udp %s: %w", ln.Addr(), err)
	}
	s := &Server{AnnounceURL: "http://" + ln.Addr().String() + "/announce", UDPURL: "udp://" + pc.LocalAddr().String(),
		t: t, ln: ln, pc: pc, srv: t.HTTPServer()}
	log.Info("fleet tracker listening", "announce", s.AnnounceURL, "udp", s.UDPURL)
	return s, nil
}

// Run serves until ctx ends, then closes the port.
func (s *Server) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("tracker: %w", err)
		}
		return nil
	})
	g.Go(func() error { return s.t.Run(gctx) })
	g.Go(func() error { return s.t.ServeUDP(gctx, s.pc) })
	<-gctx.Done()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	s.pc.Close()
	return errors.Join(err, g.Wait())
}
