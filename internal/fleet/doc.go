// Package fleet wires archivefleet's services to their dependencies: it reads
// configuration from the environment, connects to NATS and Redis, serves the
// operational HTTP endpoints and runs one service (or, in all-in-one mode,
// all of them around an embedded NATS server) until the context ends.
//
// Every service's defaults are set in one place, its Default…Config
// function, from the named constants of its package; Main applies them
// once, lets the environment override them, and validates the result
// before starting.
//
// Each running process is a thin main in cmd/ that calls one Run function
// here; the work itself is in the package named as the process runs:
//
//	process          command          Run function   packages it runs
//	scheduler        cmd/scheduler    RunScheduler   scheduler
//	archiver         cmd/archiver     RunArchiver    archiver, pruner, messages (HTTP and NATS ingest), lock
//	seeder           cmd/seeder       RunSeeder      seeder, placement, tracker (with TRACKER_LISTEN)
//	announcer        cmd/announcer    RunAnnouncer   announcer
//	waku             cmd/waku         RunWaku        wakuedge, waku/node (and the protocols under waku/)
//	all-in-one       cmd/fleet        RunAllInOne    all of the above, embedded NATS, tracker
//	archivectl       cmd/archivectl   (ctl.Main)     ctl
//
// Every process shares bus (NATS JetStream: events, workers, reads),
// state (committed archive state, objects), registry (communities and
// their keys), natsconf and observe; the formats are archive (history
// archives, torrents) and wakuwire (Waku messages as status-go sends them).
package fleet
