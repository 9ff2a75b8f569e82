// Command fleet runs the whole fleet in one process around an embedded NATS server (no external services).
//
// Configuration comes from ARCHIVEFLEET_* environment variables; run with -h
// to list them with their defaults.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/archivefleet/archivefleet/internal/fleet"
)

func main() {
	var cfg fleet.AllInOneConfig
	if len(os.Args) > 1 && (os.Args[1] == "-h" || os.Args[1] == "--help") {
		fleet.Usage(&cfg)
		return
	}
	if err := fleet.Load(&cfg); err != nil {
		fmt.Fprintln(os.Stderr, "fleet: config:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := fleet.RunAllInOne(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		os.Exit(1)
	}
}
