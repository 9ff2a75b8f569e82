// Command archivectl builds, inspects and extracts status-go community history
// archives in local folders.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/archivefleet/archivefleet/internal/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := ctl.Main(ctx, ctl.Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}, os.Args[1:])
	stop()
	os.Exit(code)
}
