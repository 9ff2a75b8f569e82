// Package ctl implements archivectl, the operator command line: building,
// inspecting and extracting community history archives on local folders,
// and managing a running fleet over NATS. It links no service: only the
// archive format, the registry, the committed state, the bus and the
// message store (to read the newest message held).
package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Env is what a command reads and writes; tests pass buffers.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env Env, args []string) error
}

var commands = []command{
	{"build", "append archives for a time range from JSON-lines messages; write index, torrent and magnet", runBuild},
	{"inspect", "list the archives of a torrent or archive folder", runInspect},
	{"extract", "write the messages of archives as JSON lines", runExtract},
	{"fetch", "download a magnet's archives as a status-go member does; append new messages to JSON lines", runFetch},
	{"probe", "fetch every community's announced magnet as a new member would, every -every; export times and failures", runProbe},
	{"sample", "write synthetic JSON-lines messages (demos and tests)", runSample},
	{"keygen", "make a community key pair and, optionally, a hash-ratchet key file", runKeygen},
	{"community", "manage the fleet's communities: add, list, disable, enable, remove", runCommunity},
	{"setup", "as the admin: create or update the fleet's NATS streams, consumers and buckets; move signing keys out of the registry", runSetup},
	{"deploy-secrets", "write a deployment's secrets: NATS users and permissions, passwords, ingest token, TLS certificates, Kubernetes Secrets", runDeploySecrets},
	{"backfill", "publish due events now for one or all communities (and wait with -wait)", runBackfill},
	{"trigger", "archive one community now, up to the current time", runTrigger},
	{"dlq", "list dead-lettered events or retry them (dlq list, dlq retry -seq N or -all)", runDLQ},
	{"conflicts", "list messages refused because their hash was stored with other content", runConflicts},
}

// errUsage marks errors whose message is usage help already printed.
var errUsage = errors.New("usage")

// Main runs archivectl with args (without the program name) and returns the
// process exit code.
func Main(ctx context.Context, env Env, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(env.Stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands {
		if c.name == args[0] {
			err := c.run(ctx, env, args[1:])
			switch {
			case err == nil, errors.Is(err, flag.ErrHelp):
				return 0
			case errors.Is(err, errUsage):
				return 2
			default:
				fmt.Fprintf(env.Stderr, "archivectl %s: %v\n", c.name, err)
				return 1
			}
		}
	}
	fmt.Fprintf(env.Stderr, "archivectl: unknown command %q\n", args[0])
	usage(env.Stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: archivectl <command> [flags]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'archivectl <command> -h' for a command's flags.")
}

func newFlagSet(env Env, name, args string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.Stderr, "usage: archivectl %s %s\n", name, args)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags and wants exactly nArgs positional arguments (-1: any).
// -h gives flag.ErrHelp (exit 0); an unknown flag or a wrong argument
// count gives errUsage (exit 2), the flag package having printed why.
func parse(fs *flag.FlagSet, args []string, nArgs int) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if nArgs >= 0 && fs.NArg() != nArgs {
		fs.Usage()
		return errUsage
	}
	return nil
}

// listFlag collects a repeatable flag; commas also separate values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

func logger(env Env, verbose bool) *slog.Logger {
	lvl := slog.LevelWarn
	if verbose {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: lvl}))
}
