package node

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/testenv"
)

// TestPeerLogs: a peer connecting and going away is logged at INFO (the
// default level), once per peer.
func TestPeerLogs(t *testing.T) {
	var logs testenv.Buffer
	a := startPeer(t, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	b, err := New(t.Context(), Config{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, StaticPeers: []string{tcpAddr(t, a)},
		Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	waitLog := func(what string) string {
		t.Helper()
		for end := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, what) {
					return l
				}
			}
			if time.Now().After(end) {
				t.Fatalf("no %q logged:\n%s", what, logs.String())
			}
		}
	}
	for _, want := range []string{"level=INFO", "peer=" + b.ID().String(), "direction=Inbound"} {
		if l := waitLog("waku peer connected"); !strings.Contains(l, want) {
			t.Errorf("%q lacks %s", l, want)
		}
	}
	b.Close()
	if l := waitLog("waku peer disconnected"); !strings.Contains(l, "level=INFO") || !strings.Contains(l, "peer="+b.ID().String()) {
		t.Errorf("disconnect logged as %q", l)
	}
	if n := strings.Count(logs.String(), "waku peer connected"); n != 1 {
		t.Errorf("connection logged %d times, want once", n)
	}
}
