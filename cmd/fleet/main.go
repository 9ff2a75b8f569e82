// Command fleet runs the whole fleet in one process around an embedded NATS server (no external services).
//
// Configuration comes from ARCHIVEFLEET_* environment variables; run with -h
// to list them with their defaults.
package main

import "github.com/archivefleet/archivefleet/internal/fleet"

func main() {
	fleet.Main("fleet", "Runs the whole fleet in one process around an embedded NATS server (no external services).", fleet.DefaultAllInOneConfig, fleet.RunAllInOne)
}
