package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Aria2cDownload runs aria2c (a BitTorrent client nobody here wrote) on
// magnet into dir with PEX and local peer discovery off, so it can only
// find peers through the magnet's trackers. dht turns the DHT on (with no
// entry point and an empty table: aria2c 1.36 speaks UDP trackers only
// through its DHT socket). It skips with -short; a missing aria2c is a test
// failure, never a skip (scripts/test installs it). A failed download
// fails the test with aria2c's output and the end of its log.
func Aria2cDownload(t testing.TB, magnet, dir string, dht bool, timeout time.Duration) {
	t.Helper()
	if err := Aria2cTry(t, magnet, dir, dht, timeout, 60*time.Second); err != nil {
		t.Fatal(err)
	}
}

// Aria2cTry is Aria2cDownload returning aria2c's failure (with its output
// and the end of its log) instead of failing the test; aria2c gives up
// after stall with nothing downloaded.
func Aria2cTry(t testing.TB, magnet, dir string, dht bool, timeout, stall time.Duration) error {
	t.Helper()
	if testing.Short() {
		t.Skip("aria2c interop: skipped with -short")
	}
	bin, err := exec.LookPath("aria2c")
	if err != nil {
		t.Fatal("aria2c not found: install it (Debian/Ubuntu: apt-get install aria2; scripts/test does) or run with -short")
	}
	logPath := filepath.Join(t.TempDir(), "aria2c.log")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--dir="+dir, "--seed-time=0",
		"--enable-dht="+strconv.FormatBool(dht), "--enable-dht6=false", "--bt-enable-lpd=false", "--enable-peer-exchange=false",
		"--dht-file-path="+filepath.Join(t.TempDir(), "dht.dat"), "--dht-listen-port="+strconv.Itoa(FreePort(t)),
		"--listen-port="+strconv.Itoa(FreePort(t)), "--disable-ipv6=true",
		"--bt-tracker-connect-timeout=5", "--bt-tracker-timeout=10", "--bt-stop-timeout="+strconv.Itoa(int(stall/time.Second)),
		"--bt-save-metadata=false", "--file-allocation=none", "--console-log-level=warn", "--summary-interval=0",
		"--log="+logPath, "--log-level=info", magnet)
	var console bytes.Buffer
	cmd.Stdout, cmd.Stderr = &console, &console
	if err := cmd.Run(); err != nil {
		logs, _ := os.ReadFile(logPath)
		if len(logs) > 8000 {
			logs = logs[len(logs)-8000:]
		}
		return fmt.Errorf("aria2c: %v\n%s\n--- aria2c log (end):\n%s", err, console.String(), logs)
	}
	if os.Getenv("ARIA2C_TEST_LOG") != "" {
		logs, _ := os.ReadFile(logPath)
		t.Logf("aria2c log:\n%s", logs)
	}
	return nil
}
