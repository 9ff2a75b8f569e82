package testenv

import (
	"testing"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
)

// Libp2pHost starts a libp2p host speaking nothing but the transport (TCP,
// noise, yamux): it listens on 127.0.0.1 if listen is set, and closes when
// the test ends.
func Libp2pHost(t testing.TB, listen bool) host.Host {
	t.Helper()
	addrs := libp2p.NoListenAddrs
	if listen {
		addrs = libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0")
	}
	h, err := libp2p.New(addrs, libp2p.Transport(tcp.NewTCPTransport), libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport), libp2p.DisableRelay(), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}
