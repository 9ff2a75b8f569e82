package ctl

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/natsconf"
	"github.com/archivefleet/archivefleet/internal/pruner"
	"github.com/archivefleet/archivefleet/internal/registry"
)

// setupConfig is what setup reads besides the NATS settings: the pruner's
// grace, read as the archiver reads it, since it decides whether the
// pruner's stream and consumers exist.
type setupConfig struct {
	PruneGrace time.Duration `envconfig:"ARCHIVEFLEET_MESSAGE_PRUNE_GRACE" desc:"the archivers' setting: 0 sets up no pruner"`
}

// runSetup sets the fleet's NATS topology up as the admin user: every
// stream, consumer and bucket the services' start-up (bus.Setup) and the
// archiver's pruner (bus.SetupPrune) would create or update, from the same
// ARCHIVEFLEET_* settings the services read, so that services whose users
// may not create streams find it in place. Then it moves any signing key an
// earlier version left in the registry to the keys bucket.
func runSetup(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "setup", "[-nats URL]   (as the admin user; reads the services' ARCHIVEFLEET_* settings)")
	url := natsFlag(fs)
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	sc := setupConfig{PruneGrace: pruner.DefaultGrace}
	if err := natsconf.Load(&sc); err != nil {
		return err
	}
	if sc.PruneGrace < 0 {
		return natsconf.Bad("MESSAGE_PRUNE_GRACE", sc.PruneGrace, "must not be negative")
	}
	b, err := connect(ctx, env, *url, "archivectl") // runs bus.Setup
	if err != nil {
		return err
	}
	defer b.NC.Close()
	c := b.Config
	fmt.Fprintf(env.Stdout, "streams, consumers, buckets and the object store set up (replicas %d, message retention %v, ack wait %v)\n",
		c.Replicas, c.MessageRetention, c.AckWait)
	if sc.PruneGrace > 0 {
		if err := natsconf.SetupRetry.Do(ctx, func(ctx context.Context) error { return bus.SetupPrune(ctx, b) }); err != nil {
			return fmt.Errorf("message pruner: %w", err)
		}
		fmt.Fprintf(env.Stdout, "message pruner's stream %s and consumers set up (grace %v)\n", bus.StreamPrune, sc.PruneGrace)
	} else {
		fmt.Fprintln(env.Stdout, "message pruner not set up: MESSAGE_PRUNE_GRACE=0 keeps every message")
	}
	if err := bus.EnsureMessagesLayout(ctx, b); err != nil {
		return fmt.Errorf("messages layout: %w", err)
	}
	moved, err := registry.New(b.Communities).MoveSigningKeys(ctx, registry.NewKeys(b.CommunityKeys))
	if len(moved) > 0 {
		ids := make([]string, len(moved))
		for i, id := range moved {
			ids[i] = id.String()
		}
		fmt.Fprintf(env.Stdout, "moved the signing keys of %d communities from %s to %s: %s\n", len(moved), bus.BucketCommunities,
			bus.BucketCommunityKeys, strings.Join(ids, ", "))
	}
	if err != nil {
		return fmt.Errorf("signing keys left in the registry: %w", err)
	}
	if len(moved) == 0 {
		fmt.Fprintf(env.Stdout, "no signing key left in %s\n", bus.BucketCommunities)
	}
	return nil
}
