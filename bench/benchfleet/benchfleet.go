// Package benchfleet is the set-up the fleet benchmarks share: the service
// binaries built once, NATS embedded in the benchmark process, a
// redis-server child, and small communities registered and filled with
// messages before any service runs.
package benchfleet

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/sync/errgroup"

	"github.com/archivefleet/archivefleet/bench/proc"
	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/fleet"
	"github.com/archivefleet/archivefleet/internal/messages"
	"github.com/archivefleet/archivefleet/internal/registry"
)

// Env is one benchmark's world. Close stops what it started.
type Env struct {
	Dir       string // work folder (binaries in Dir/bin)
	NATS      *server.Server
	RedisPort int
	Bus       *bus.Bus
	redis     *exec.Cmd
}

// Start builds the given ./cmd/... services into dir/bin, starts NATS with
// JetStream on dir/nats and a redis-server, and connects.
func Start(dir string, services ...string) (*Env, error) {
	e := &Env{Dir: dir}
	args := []string{"build", "-o", filepath.Join(dir, "bin") + "/"}
	for _, s := range services {
		args = append(args, "./cmd/"+s)
	}
	build := exec.Command("go", args...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return nil, fmt.Errorf("build %v: %w", services, err)
	}
	ns, err := fleet.EmbeddedNATS(filepath.Join(dir, "nats"), "127.0.0.1", -1)
	if err != nil {
		return nil, err
	}
	e.NATS = ns
	e.RedisPort = proc.MustFreePort()
	e.redis = proc.Command("redis-server", "--port", strconv.Itoa(e.RedisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := e.redis.Start(); err != nil {
		e.Close()
		return nil, fmt.Errorf("redis-server: %w", err)
	}
	time.Sleep(300 * time.Millisecond)
	c := fleet.Common{NATSURL: ns.ClientURL(), AckWait: 30 * time.Second, MaxDeliver: 20, Replicas: 1}
	if e.Bus, err = c.Connect(context.Background(), "bench", fleet.Common{LogLevel: "warn"}.NewLogger("bench")); err != nil {
		e.Close()
		return nil, err
	}
	// What archivectl setup does before a fleet's first message: without
	// it, readers look for records of earlier layouts too.
	if err := bus.EnsureMessagesLayout(context.Background(), e.Bus); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// Bin is the path of a built service binary.
func (e *Env) Bin(service string) string { return filepath.Join(e.Dir, "bin", service) }

// ServiceEnv is the environment every service process gets: this NATS and
// Redis, quiet logs, no public trackers, no settle (the benchmarks publish
// closed windows).
func (e *Env) ServiceEnv() []string {
	return append(os.Environ(), "ARCHIVEFLEET_NATS_URL="+e.NATS.ClientURL(), fmt.Sprintf("ARCHIVEFLEET_REDIS_ADDR=127.0.0.1:%d", e.RedisPort),
		"ARCHIVEFLEET_LOG_LEVEL=warn", "ARCHIVEFLEET_TRACKERS=none", "ARCHIVEFLEET_SETTLE=0")
}

// Close stops Redis and NATS.
func (e *Env) Close() {
	if e.Bus != nil {
		e.Bus.NC.Close()
	}
	if e.redis != nil && e.redis.Process != nil {
		e.redis.Process.Kill()
		e.redis.Wait()
	}
	if e.NATS != nil {
		fleet.StopNATS(context.Background(), e.NATS)
	}
}

// SmallCommunities registers n hourly communities whose window began an
// hour ago and gives each 10 messages of 200 bytes in it.
func (e *Env) SmallCommunities(ctx context.Context, n int) ([]*registry.Community, error) {
	now := uint64(time.Now().Unix())
	reg, keys := registry.New(e.Bus.Communities), registry.NewKeys(e.Bus.CommunityKeys)
	st := &messages.Store{Bus: e.Bus}
	coms := make([]*registry.Community, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range coms {
		g.Go(func() error {
			key := fixture.Key()
			com := fixture.CommunityFromKey(key, time.Hour, now-3600, archive.Topic{1, 2, 3, 4})
			if _, err := keys.Put(gctx, key); err != nil {
				return err
			}
			if err := reg.Put(gctx, com); err != nil {
				return err
			}
			msgs := fixture.Messages{N: 10, From: now - 3600, To: now - 3600 + 3000, Topics: com.Topics[:1],
				Signers: [][]byte{fixture.Signer(key)}, Size: 200}.Make()
			_, err := st.Ingest(gctx, com.ID, msgs)
			coms[i] = com
			return err
		})
	}
	return coms, g.Wait()
}
