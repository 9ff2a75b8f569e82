// Command seeder seeds every community's newest archive torrent.
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
	var cfg fleet.SeederConfig
	if len(os.Args) > 1 && (os.Args[1] == "-h" || os.Args[1] == "--help") {
		fleet.Usage(&cfg)
		return
	}
	if err := fleet.Load(&cfg); err != nil {
		fmt.Fprintln(os.Stderr, "seeder: config:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := fleet.RunSeeder(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "seeder:", err)
		os.Exit(1)
	}
}
