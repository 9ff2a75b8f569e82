package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/console"
	"github.com/archivefleet/archivefleet/internal/natsconf"
)

// newConsole builds the operator console for a process serving HTTP on
// addr with settings cfg (a config struct; secrets are left out). peers is
// the process's Waku peer, nil when it has none. Reads need the token
// unless addr is on loopback; actions always do.
func newConsole(b *bus.Bus, cfg any, addr, token string, peers console.WakuPeers, log *slog.Logger, reg prometheus.Registerer) http.Handler {
	c := console.New(console.Console{Bus: b, Token: token, OpenReads: loopback(addr), Settings: settingsOf(cfg), Peers: peers,
		Logger: log}, reg)
	log.Info("operator console", "url", "http://"+addr+console.Path, "actions", token != "", "reads_open", loopback(addr))
	return c.Handler()
}

// settingsOf lists the variables cfg (a pointer to a config) reads with
// their values, secrets left out.
func settingsOf(cfg any) []console.Setting {
	var out []console.Setting
	natsconf.Walk(cfg, func(v natsconf.Var) error {
		val := fmt.Sprint(v.Field.Interface())
		if v.Secret {
			val = "(secret: not shown)"
			if v.Field.IsZero() {
				val = "(not set)"
			}
		}
		out = append(out, console.Setting{Name: v.Name, Value: val})
		return nil
	})
	return out
}

// loopback reports whether addr (host:port) listens on loopback only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback() || host == "localhost"
}

// DefaultConsoleHTTP is cmd/console's listener (the prober has 9106).
const DefaultConsoleHTTP = "127.0.0.1:9107"

// ConsoleConfig configures cmd/console.
type ConsoleConfig struct {
	Common
	// Token is the operator token: the ingest token the archiver requires.
	Token string `envconfig:"ARCHIVEFLEET_INGEST_TOKEN" desc:"the operator token the console's actions require (the archiver's ingest token); also required to read the page when HTTP_ADDR is not loopback" secret:"true"`
}

// DefaultConsoleConfig returns the console's defaults.
func DefaultConsoleConfig() ConsoleConfig {
	c := ConsoleConfig{Common: natsconf.DefaultCommon()}
	c.HTTPAddr = DefaultConsoleHTTP
	return c
}

// Validate checks the console's settings: a listener other hosts reach
// needs the token (without it nobody could read or act).
func (c ConsoleConfig) Validate() error {
	errs := []error{c.Common.Validate(), natsconf.NonEmpty("HTTP_ADDR", c.HTTPAddr)}
	if c.Token == "" && c.HTTPAddr != "" && !loopback(c.HTTPAddr) {
		errs = append(errs, natsconf.Bad("INGEST_TOKEN", `""`, "is required when HTTP_ADDR ("+c.HTTPAddr+") is reachable from other hosts: the console's reads and actions need it"))
	}
	return errors.Join(errs...)
}

// RunConsole serves the operator console until ctx ends.
func RunConsole(ctx context.Context, cfg ConsoleConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	return runService(ctx, cfg.Common, "console", func(b *bus.Bus, log *slog.Logger, reg prometheus.Registerer) (*service, error) {
		h := newConsole(b, &cfg, cfg.HTTPAddr, cfg.Token, nil, log, reg)
		run := func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		}
		return &service{run: run, handlers: map[string]http.Handler{console.Path: h}}, nil
	})
}
