// Command announcer announces seeded torrents' magnet links, signed with the community key.
//
// Configuration comes from ARCHIVEFLEET_* environment variables; run with -h
// to list them with their defaults.
package main

import "github.com/archivefleet/archivefleet/internal/fleet"

func main() {
	fleet.Main("announcer", "Announces seeded torrents' magnet links, signed with the community key.", fleet.DefaultAnnouncerConfig, fleet.RunAnnouncer)
}
