package main

import (
	"log/slog"
	"net"

	g "github.com/anacrolix/generics"
	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/storage"

	"github.com/archivefleet/archivefleet/internal/seeder"
)

// variant names client settings to try in place of the service's (-variant).
var variant string

// variants change the client configuration of seeder.NewClient, which
// buildConfig mirrors, to try a proposed setting from the benchmark before
// proposing it for internal/seeder.
var variants = map[string]func(*torrent.ClientConfig){
	"same": func(*torrent.ClientConfig) {}, // the mirror unchanged: checks the mirror matches
	// More peer-request data read ahead per connection (default 1 MiB), so
	// a descheduled reader or writer goroutine stalls the pipe less.
	"alloc4m":  func(c *torrent.ClientConfig) { c.MaxAllocPeerRequestDataPerConn = 4 << 20 },
	"alloc16m": func(c *torrent.ClientConfig) { c.MaxAllocPeerRequestDataPerConn = 16 << 20 },
}

// newClient is seeder.NewClient, or its mirror with -variant applied.
func newClient(c seeder.Config, log *slog.Logger) (*torrent.Client, storage.ClientImplCloser, error) {
	if variant == "" {
		return seeder.NewClient(c, "127.0.0.1", 0, log)
	}
	cfg := torrent.NewDefaultClientConfig()
	host := "127.0.0.1"
	cfg.ListenHost = func(string) string { return host }
	cfg.ListenPort = 0
	cfg.Seed = true
	cfg.NoDHT = !c.DHT
	cfg.DisableTrackers = !c.Trackers
	cfg.NoDefaultPortForwarding = true
	if ip := net.ParseIP(host); ip != nil && ip.To4() != nil {
		cfg.DisableIPv6 = true
	}
	cfg.DataDir = c.DataDir
	cfg.Slogger = log.With("component", "torrent")
	st := storage.NewFileOpts(storage.NewFileClientOpts{ClientBaseDir: c.DataDir, UsePartFiles: g.Some(true)})
	cfg.DefaultStorage = st
	variants[variant](cfg)
	cl, err := torrent.NewClient(cfg)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return cl, st, nil
}
