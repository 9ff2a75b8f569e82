package fleet

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
	"github.com/archivefleet/archivefleet/internal/tracker"
)

// trackerServer is an open fleet tracker; run serves until ctx ends.
type trackerServer struct {
	run         func(context.Context) error
	announceURL string // http://<listen address>/announce
	udpURL      string
}

// newTrackerServer opens the fleet tracker on addr, HTTP (/announce,
// /scrape) on TCP and BEP 15 on UDP at the same port, answering from the
// swarm shared in NATS (any replica answers for every torrent the fleet's
// seeders are registered for).
func newTrackerServer(b *bus.Bus, addr string, log *slog.Logger, reg prometheus.Registerer) (*trackerServer, error) {
	t, err := tracker.New(tracker.NewRegistry(b), tracker.Config{}, log, reg)
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
	srv := t.HTTPServer()
	ts := &trackerServer{announceURL: "http://" + ln.Addr().String() + "/announce", udpURL: "udp://" + pc.LocalAddr().String()}
	log.Info("fleet tracker listening", "announce", ts.announceURL, "udp", ts.udpURL)
	ts.run = func(ctx context.Context) error {
		g, gctx := errgroup.WithContext(ctx)
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("tracker: %w", err)
			}
			return nil
		})
		g.Go(func() error { return t.Run(gctx) })
		g.Go(func() error { return t.ServeUDP(gctx, pc) })
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		err := srv.Shutdown(sctx)
		pc.Close()
		return errors.Join(err, g.Wait())
	}
	return ts, nil
}
