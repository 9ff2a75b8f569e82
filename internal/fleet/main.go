package fleet

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/archivefleet/archivefleet/internal/natsconf"
)

// Config is a service configuration: its defaults come from a
// Default…Config function and Validate checks it after the environment
// is read.
type Config interface{ Validate() error }

// Main is every service command's main: it takes no flags or arguments (-h
// lists the environment variables with their defaults), applies the
// defaults, reads the environment over them, validates the result and runs
// until SIGINT or SIGTERM. Exit codes: 0, 1 when the service fails, 2 for a
// usage or configuration error.
func Main[T Config](name, about string, defaults func() T, run func(context.Context, T) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	endProfile, err := startProfile()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(2)
	}
	code := mainCode(ctx, name, about, os.Args[1:], os.Stderr, defaults, run)
	endProfile()
	stop()
	os.Exit(code)
}

func mainCode[T Config](ctx context.Context, name, about string, args []string, stderr io.Writer,
	defaults func() T, run func(context.Context, T) error) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {} // the flag package's error is enough; -h is answered below
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "usage: %s\n\n%s\n\nIt takes no flags; it reads these environment variables:\n\n", name, about)
			cfg := defaults()
			natsconf.Usage(stderr, &cfg)
			return 0
		}
		fmt.Fprintf(stderr, "%s takes no flags: configuration comes from the environment (see %s -h)\n", name, name)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q (configuration comes from the environment; see %s -h)\n", name, fs.Arg(0), name)
		return 2
	}
	cfg := defaults()
	if err := natsconf.Load(&cfg); err != nil {
		fmt.Fprintf(stderr, "%s: config: %v\n", name, err)
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "%s: config: %v\n", name, err)
		return 2
	}
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	return 0
}
