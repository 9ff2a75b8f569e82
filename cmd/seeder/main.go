// Command seeder seeds every community's newest archive torrent.
//
// Configuration comes from ARCHIVEFLEET_* environment variables; run with -h
// to list them with their defaults.
package main

import "github.com/archivefleet/archivefleet/internal/fleet"

func main() {
	fleet.Main("seeder", "Seeds every community's newest archive torrent.", fleet.DefaultSeederConfig, fleet.RunSeeder)
}
