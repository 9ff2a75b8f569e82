package fleet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ErrPortInUse is returned when the embedded server's port is taken.
var ErrPortInUse = errors.New("port in use")

// EmbeddedOptions configures an in-process NATS server.
type EmbeddedOptions struct {
	Dir  string // JetStream storage
	Host string // "" means 127.0.0.1
	Port int    // -1 picks a free port
	// MaxPayload is the largest message the server takes; 0 is NATS's
	// default (1 MiB).
	MaxPayload int32
}

// EmbeddedNATS starts an in-process NATS server with JetStream, storing in
// dir. port -1 picks a free port; host "" means 127.0.0.1.
func EmbeddedNATS(dir, host string, port int) (*server.Server, error) {
	return StartEmbedded(EmbeddedOptions{Dir: dir, Host: host, Port: port})
}

// StartEmbedded starts an in-process NATS server with JetStream. A taken
// port fails at once with ErrPortInUse (the server itself would only time
// out).
func StartEmbedded(o EmbeddedOptions) (*server.Server, error) {
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Port > 0 {
		addr := net.JoinHostPort(o.Host, strconv.Itoa(o.Port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("embedded nats: %s: %w (%v)", addr, ErrPortInUse, err)
		}
		ln.Close()
	}
	s, err := server.NewServer(&server.Options{
		ServerName: "archivefleet-embedded", Host: o.Host, Port: o.Port, MaxPayload: o.MaxPayload,
		JetStream: true, StoreDir: o.Dir, NoSigs: true, NoLog: true,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded nats: not ready after 10s")
	}
	return s, nil
}

// StopNATS shuts an embedded server down and waits.
func StopNATS(_ context.Context, s *server.Server) {
	s.Shutdown()
	s.WaitForShutdown()
}
