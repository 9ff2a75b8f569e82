// Command archiver builds community history archives from archive-due events and serves message ingest.
//
// Configuration comes from ARCHIVEFLEET_* environment variables; run with -h
// to list them with their defaults.
package main

import "github.com/archivefleet/archivefleet/internal/fleet"

func main() {
	fleet.Main("archiver", "Builds community history archives from archive-due events and serves message ingest.", fleet.DefaultArchiverConfig, fleet.RunArchiver)
}
