// Command console serves the operator console (internal/console) for the
// separate services: communities, dead letters and settings, with the
// operator's actions behind the operator token.
//
// Configuration comes from ARCHIVEFLEET_* environment variables; run with -h
// to list them with their defaults.
package main

import "github.com/archivefleet/archivefleet/internal/fleet"

func main() {
	fleet.Main("console", "Serves the operator console under /console/: communities, dead letters, settings and the operator's actions.",
		fleet.DefaultConsoleConfig, fleet.RunConsole)
}
