// Package hostiletest tries the fleet as a careless or hostile client would:
// the real processes (the all-in-one, the services) on 127.0.0.1, fed the
// largest, emptiest, most numerous, slowest and forged inputs, with the
// bound each must hold asserted on the process itself (peak resident
// memory, CPU time, reply size, bytes kept, time to stop). Every figure
// asserted here is a row of RELIABILITY.md's "Hostile input" table.
package hostiletest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/natsconf"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := testenv.BuildCommands("../..", "fleet", "archiver", "seeder", "announcer", "scheduler", "waku")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// fleetProc is an all-in-one fleet process and what it logged about where
// it listens.
type fleetProc struct {
	*testenv.Proc
	DataDir string
	// HTTP is the metrics/ingest address (host:port).
	HTTP string
	// NATS is the embedded server's client URL.
	NATS string
}

// startFleet runs the all-in-one without the demo, on random ports, with
// env added (later values win), and waits until it has started.
func startFleet(t *testing.T, env ...string) *fleetProc {
	t.Helper()
	dir := t.TempDir()
	base := []string{
		"ARCHIVEFLEET_DATA_DIR=" + dir,
		"ARCHIVEFLEET_DEMO=false",
		"ARCHIVEFLEET_EMBEDDED_NATS_PORT=-1",
		"ARCHIVEFLEET_HTTP_ADDR=127.0.0.1:0",
		"ARCHIVEFLEET_LOG_FORMAT=text",
		"ARCHIVEFLEET_LOG_LEVEL=info",
		"ARCHIVEFLEET_SETTLE=0s",
	}
	p := testenv.StartProc(t, "fleet", filepath.Join(binDir, "fleet"), append(base, env...)...)
	f := &fleetProc{Proc: p, DataDir: dir}
	f.NATS = testenv.LogAttr(p.WaitLog(t, 60*time.Second, "embedded NATS JetStream started"), "url")
	f.HTTP = testenv.LogAttr(p.WaitLog(t, 60*time.Second, "http listening"), "addr")
	p.WaitLog(t, 60*time.Second, "fleet started")
	return f
}

// URL is the fleet's HTTP base URL.
func (f *fleetProc) URL() string { return "http://" + f.HTTP }

// Bus connects to the fleet's embedded NATS as an operator would.
func (f *fleetProc) Bus(t *testing.T) *bus.Bus {
	t.Helper()
	c := natsconf.Common{NATSURL: f.NATS, AckWait: 30 * time.Second, MaxDeliver: 20, Replicas: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := c.Connect(ctx, "hostiletest", testenv.Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.NC.Close() })
	return b
}

// mib formats bytes as MiB for messages.
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// tracked lines a test wants in its log: figures measured, for the notes.
func report(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf("FIGURE %s", strings.TrimSpace(fmt.Sprintf(format, args...)))
}

// restartFleet starts the all-in-one again on f's data dir (after f
// exited), with env added.
func restartFleet(t *testing.T, f *fleetProc, env ...string) *fleetProc {
	t.Helper()
	base := []string{
		"ARCHIVEFLEET_DATA_DIR=" + f.DataDir,
		"ARCHIVEFLEET_DEMO=false",
		"ARCHIVEFLEET_EMBEDDED_NATS_PORT=-1",
		"ARCHIVEFLEET_HTTP_ADDR=127.0.0.1:0",
		"ARCHIVEFLEET_LOG_FORMAT=text",
		"ARCHIVEFLEET_LOG_LEVEL=info",
		"ARCHIVEFLEET_SETTLE=0s",
	}
	p := testenv.StartProc(t, "fleet (restarted)", filepath.Join(binDir, "fleet"), append(base, env...)...)
	g := &fleetProc{Proc: p, DataDir: f.DataDir}
	g.NATS = testenv.LogAttr(p.WaitLog(t, 60*time.Second, "embedded NATS JetStream started"), "url")
	g.HTTP = testenv.LogAttr(p.WaitLog(t, 60*time.Second, "http listening"), "addr")
	p.WaitLog(t, 60*time.Second, "fleet started")
	return g
}
