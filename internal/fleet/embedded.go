package fleet

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedNATS starts an in-process NATS server with JetStream, storing in
// dir. port -1 picks a free port; host "" means 127.0.0.1.
func EmbeddedNATS(dir, host string, port int) (*server.Server, error) {
	if host == "" {
		host = "127.0.0.1"
	}
	s, err := server.NewServer(&server.Options{
		ServerName: "archivefleet-embedded", Host: host, Port: port,
		JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true,
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
