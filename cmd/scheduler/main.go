// Command scheduler publishes archive-due events for every registered community.
//
// Configuration comes from ARCHIVEFLEET_* environment variables; run with -h
// to list them with their defaults.
package main

import "github.com/archivefleet/archivefleet/internal/fleet"

func main() {
	fleet.Main("scheduler", "Publishes archive-due events for every registered community.", fleet.DefaultSchedulerConfig, fleet.RunScheduler)
}
