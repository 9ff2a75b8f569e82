package fleet

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// Main is every service command's main: -h lists the environment variables,
// otherwise it loads the configuration and runs until SIGINT or SIGTERM.
func Main[T any](name string, run func(context.Context, T) error) {
	var cfg T
	if len(os.Args) > 1 && (os.Args[1] == "-h" || os.Args[1] == "--help") {
		Usage(&cfg)
		return
	}
	if err := Load(&cfg); err != nil {
		fmt.Fprintf(os.Stderr, "%s: config: %v\n", name, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, cfg)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}
