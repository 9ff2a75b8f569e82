// Package fleet wires archivefleet's services to their dependencies: it reads
// configuration from the environment, connects to NATS and Redis, serves the
// operational HTTP endpoints and runs one service (or, in all-in-one mode,
// all of them around an embedded NATS server) until the context ends.
package fleet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/archivefleet/archivefleet/internal/bus"
)

// Prefix is the environment prefix of every variable.
const Prefix = "ARCHIVEFLEET"

// Common is configuration every service reads.
type Common struct {
	NATSURL      string        `envconfig:"NATS_URL" default:"nats://127.0.0.1:4222"`
	NATSUser     string        `envconfig:"NATS_USER"`
	NATSPassword string        `envconfig:"NATS_PASSWORD"`
	NATSToken    string        `envconfig:"NATS_TOKEN"`
	NATSCreds    string        `envconfig:"NATS_CREDS"`
	NATSTLSCA    string        `envconfig:"NATS_TLS_CA"`
	NATSTLSCert  string        `envconfig:"NATS_TLS_CERT"`
	NATSTLSKey   string        `envconfig:"NATS_TLS_KEY"`
	Replicas     int           `envconfig:"NATS_REPLICAS" default:"1"`
	Retention    time.Duration `envconfig:"MESSAGE_RETENTION" default:"0"`
	AckWait      time.Duration `envconfig:"ACK_WAIT" default:"30s"`
	MaxDeliver   int           `envconfig:"MAX_DELIVER" default:"20"`
	// HTTPAddr serves /metrics, /healthz, /readyz (and ingest on the archiver
	// and fleet). Empty means loopback on the service's own port.
	HTTPAddr  string `envconfig:"HTTP_ADDR"`
	LogLevel  string `envconfig:"LOG_LEVEL" default:"info"`
	LogFormat string `envconfig:"LOG_FORMAT" default:"json"`
}

// Redis configures the lock service.
type Redis struct {
	Addr     string `envconfig:"REDIS_ADDR" default:"127.0.0.1:6379"`
	Username string `envconfig:"REDIS_USERNAME"`
	Password string `envconfig:"REDIS_PASSWORD"`
	DB       int    `envconfig:"REDIS_DB" default:"0"`
	TLS      bool   `envconfig:"REDIS_TLS" default:"false"`
	TLSCA    string `envconfig:"REDIS_TLS_CA"`
}

// Load fills cfg from the environment.
func Load(cfg any) error { return envconfig.Process(Prefix, cfg) }

// Usage writes the variables cfg reads, for -h.
func Usage(cfg any) { envconfig.Usage(Prefix, cfg) }

// NewLogger returns a slog logger at the configured level and format.
func (c Common) NewLogger(service string) *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler = slog.NewJSONHandler(os.Stderr, opts)
	if strings.EqualFold(c.LogFormat, "text") {
		h = slog.NewTextHandler(os.Stderr, opts)
	}
	return slog.New(h).With("service", service)
}

// httpAddr returns the configured address or the service's loopback default.
func (c Common) httpAddr(def string) string {
	if c.HTTPAddr != "" {
		return c.HTTPAddr
	}
	return def
}

// BusConfig is the topology configuration.
func (c Common) BusConfig() bus.Config {
	return bus.Config{Replicas: c.Replicas, MessageRetention: c.Retention, AckWait: c.AckWait, MaxDeliver: c.MaxDeliver}
}

// Connect dials NATS with the configured credentials and sets up the topology.
// Secrets are never logged.
func (c Common) Connect(ctx context.Context, name string, log *slog.Logger, extra ...nats.Option) (*bus.Bus, error) {
	opts := []nats.Option{
		nats.Name("archivefleet-" + name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil on a deliberate close or drain
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted()) }),
	}
	switch {
	case c.NATSCreds != "":
		opts = append(opts, nats.UserCredentials(c.NATSCreds))
	case c.NATSToken != "":
		opts = append(opts, nats.Token(c.NATSToken))
	case c.NATSUser != "":
		opts = append(opts, nats.UserInfo(c.NATSUser, c.NATSPassword))
	}
	if c.NATSTLSCA != "" {
		opts = append(opts, nats.RootCAs(c.NATSTLSCA))
	}
	if c.NATSTLSCert != "" {
		opts = append(opts, nats.ClientCert(c.NATSTLSCert, c.NATSTLSKey))
	}
	opts = append(opts, extra...)
	nc, err := nats.Connect(c.NATSURL, opts...)
	if err != nil {
		return nil, fmt.Errorf("nats connect: %w", err)
	}
	b, err := bus.Setup(ctx, nc, c.BusConfig())
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("nats topology: %w", err)
	}
	log.Info("nats connected", "url", nc.ConnectedUrlRedacted())
	return b, nil
}

// Client opens the Redis client.
func (r Redis) Client() (*redis.Client, error) {
	o := &redis.Options{Addr: r.Addr, Username: r.Username, Password: r.Password, DB: r.DB}
	if r.TLS {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if r.TLSCA != "" {
			pem, err := os.ReadFile(r.TLSCA)
			if err != nil {
				return nil, fmt.Errorf("redis tls ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("redis tls ca %s: no certificate", r.TLSCA)
			}
			tc.RootCAs = pool
		}
		o.TLSConfig = tc
	}
	return redis.NewClient(o), nil
}
