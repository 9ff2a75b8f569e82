package fleet

import (
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
