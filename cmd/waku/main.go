// Command waku delivers announcements to community members over Waku relay:
// the announcer's signed magnet-link messages, on the community's shard, to
// the <id>-memberUpdate and legacy <id>-magnetlinks chats.
//
// Configuration comes from ARCHIVEFLEET_* environment variables; run with -h
// to list them with their defaults.
package main

import "github.com/archivefleet/archivefleet/internal/fleet"

func main() {
	fleet.Main("waku", "Delivers announcements to community members over Waku relay.", fleet.DefaultWakuConfig, fleet.RunWaku)
}
