package fleet

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/testenv"
)

// TestInterruptExitsClean runs the built all-in-one with its defaults (in a
// temporary data dir, on free ports), sends SIGINT as Ctrl-C does, once
// while it starts and once when it runs, and wants exit code 0 and no
// error logged.
func TestInterruptExitsClean(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cmd/fleet")
	}
	bin, err := testenv.BuildCommands("../..", "fleet")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(bin) })
	for _, tc := range []struct {
		name  string
		after []string // the log line SIGINT waits for
	}{
		{"while starting", []string{"embedded NATS JetStream started"}},
		{"running", []string{"fleet started"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testenv.StartProc(t, "fleet", filepath.Join(bin, "fleet"),
				Prefix+"_DATA_DIR="+t.TempDir(), Prefix+"_EMBEDDED_NATS_PORT=-1",
				fmt.Sprintf("%s_HTTP_ADDR=127.0.0.1:%d", Prefix, testenv.FreePort(t)))
			p.WaitLog(t, 2*time.Minute, tc.after...)
			if err := p.Cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			select {
			case <-p.Done():
			case <-time.After(time.Minute):
				t.Fatalf("still running a minute after SIGINT; log tail:\n%s", p.Tail(40))
			}
			if code := p.ExitCode(); code != 0 {
				t.Errorf("exit code %d, want 0; log tail:\n%s", code, p.Tail(40))
			}
			for _, l := range strings.Split(p.Log.String(), "\n") {
				if strings.Contains(l, `"level":"ERROR"`) || strings.Contains(l, "level=ERROR") {
					t.Errorf("error logged: %s", l)
				}
			}
		})
	}
}
