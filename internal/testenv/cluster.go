package testenv

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/archivefleet/archivefleet/internal/bus"
)

// ClusterSize is the number of nodes NATSCluster starts: the smallest
// cluster that keeps an R3 stream writable with one node down.
const ClusterSize = 3

// clusterAccount is the account streams live in when no accounts are
// configured.
const clusterAccount = server.DEFAULT_GLOBAL_ACCOUNT

// Cluster is a JetStream cluster of real nats-server nodes, in process,
// clustered over 127.0.0.1 routes. Each node keeps its name, client and
// route ports and store directory across Kill and Restart, as a restarted
// pod does. Methods are safe for concurrent use.
type Cluster struct {
	Name  string
	nodes []*clusterNode
	opts  []func(*server.Options)
	mu    sync.Mutex
}

type clusterNode struct {
	name       string
	dir        string
	clientPort int
	routePort  int
	srv        *server.Server // nil while down
}

// NATSCluster starts a three-node JetStream cluster storing under a temp
// dir, waits for a meta leader and stops every node with the test. Options,
// if given, adjust each node's options (e.g. MaxPayload).
func NATSCluster(t testing.TB, options ...func(*server.Options)) *Cluster {
	t.Helper()
	c, err := StartCluster(t.TempDir(), ClusterSize, options...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Shutdown)
	return c
}

// StartCluster starts n clustered JetStream nodes storing under dir (one
// sub-directory per node) on free loopback ports and waits until the
// cluster has a meta leader. Benchmarks use it directly; tests use
// NATSCluster.
func StartCluster(dir string, n int, options ...func(*server.Options)) (*Cluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("cluster of %d nodes", n)
	}
	c := &Cluster{Name: "archivefleet-test", opts: options}
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	for i := 0; i < n; i++ {
		c.nodes = append(c.nodes, &clusterNode{name: fmt.Sprintf("n%d", i), dir: filepath.Join(dir, fmt.Sprintf("n%d", i)),
			clientPort: ports[2*i], routePort: ports[2*i+1]})
	}
	// Start every node before waiting for any: a node is ready for clients
	// before it has found its routes, and the meta group needs a quorum.
	for i := range c.nodes {
		if err := c.start(i, false); err != nil {
			c.Shutdown()
			return nil, err
		}
	}
	for i := range c.nodes {
		if !c.Server(i).ReadyForConnections(10 * time.Second) {
			c.Shutdown()
			return nil, fmt.Errorf("cluster node %s not ready after 10s", c.nodes[i].name)
		}
	}
	if _, err := c.WaitMetaLeader(30 * time.Second); err != nil {
		c.Shutdown()
		return nil, err
	}
	return c, nil
}

// freePorts returns k distinct TCP ports free on 127.0.0.1 right now.
func freePorts(k int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range k {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func (c *Cluster) options(i int) *server.Options {
	nd := c.nodes[i]
	var routes []string
	for _, o := range c.nodes {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", o.routePort))
	}
	o := &server.Options{ServerName: nd.name, Host: "127.0.0.1", Port: nd.clientPort,
		JetStream: true, StoreDir: nd.dir, NoSigs: true, NoLog: true,
		Cluster: server.ClusterOpts{Name: c.Name, Host: "127.0.0.1", Port: nd.routePort},
		Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
	}
	for _, f := range c.opts {
		f(o)
	}
	return o
}

// start starts node i (which must be down); with wait, until it accepts
// clients.
func (c *Cluster) start(i int, wait bool) error {
	s, err := server.NewServer(c.options(i))
	if err != nil {
		return fmt.Errorf("cluster node %s: %w", c.nodes[i].name, err)
	}
	go s.Start()
	if wait && !s.ReadyForConnections(10*time.Second) {
		s.Shutdown()
		return fmt.Errorf("cluster node %s not ready after 10s", c.nodes[i].name)
	}
	c.mu.Lock()
	c.nodes[i].srv = s
	c.mu.Unlock()
	return nil
}

// Size is the number of nodes, up or down.
func (c *Cluster) Size() int { return len(c.nodes) }

// NodeName is node i's server name.
func (c *Cluster) NodeName(i int) string { return c.nodes[i].name }

// Server is node i's running server, or nil while it is down.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].srv
}

// Up reports whether node i is running.
func (c *Cluster) Up(i int) bool { return c.Server(i) != nil }

// URL is node i's client URL (the same whether the node is up or down).
func (c *Cluster) URL(i int) string { return fmt.Sprintf("nats://127.0.0.1:%d", c.nodes[i].clientPort) }

// URLs lists every node's client URL, comma-separated: what
// ARCHIVEFLEET_NATS_URL and nats.Connect take, so a client fails over to
// another node when its own goes down.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.nodes))
	for i := range c.nodes {
		urls[i] = c.URL(i)
	}
	return strings.Join(urls, ",")
}

// Kill shuts node i down (its clients are disconnected and fail over; its
// store stays on disk) and waits until it has stopped. A down node is left
// as it is.
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	s := c.nodes[i].srv
	c.nodes[i].srv = nil
	c.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Restart starts node i again, on the same ports and store directory,
// and waits until it accepts clients (not until it has caught up: see
// WaitCurrent).
func (c *Cluster) Restart(i int) error {
	if c.Up(i) {
		return fmt.Errorf("cluster node %s is running", c.nodes[i].name)
	}
	return c.start(i, true)
}

// LoseQuorum kills every node but the first, so the cluster has no meta
// leader and JetStream requests time out or are refused as temporarily
// unavailable; the returned heal restarts them.
func (c *Cluster) LoseQuorum(t testing.TB) (heal func()) {
	for i := 1; i < len(c.nodes); i++ {
		c.Kill(i)
	}
	return func() {
		for i := 1; i < len(c.nodes); i++ {
			if err := c.Restart(i); err != nil {
				t.Error(err)
			}
		}
	}
}

// Shutdown stops every node.
func (c *Cluster) Shutdown() {
	for i := range c.nodes {
		c.Kill(i)
	}
}

// MetaLeader is the index of the node leading the JetStream meta group
// (the one that places streams and consumers), or -1 when none does.
func (c *Cluster) MetaLeader() int {
	for i := range c.nodes {
		if s := c.Server(i); s != nil && s.JetStreamIsLeader() {
			return i
		}
	}
	return -1
}

// StreamLeader is the index of the node leading stream (a KV bucket's is
// "KV_<bucket>", an object store's "OBJ_<bucket>"), or -1 when none does.
func (c *Cluster) StreamLeader(stream string) int {
	for i := range c.nodes {
		if s := c.Server(i); s != nil && s.JetStreamIsStreamLeader(clusterAccount, stream) {
			return i
		}
	}
	return -1
}

// ConsumerLeader is the index of the node leading a durable consumer, or
// -1 when none does.
func (c *Cluster) ConsumerLeader(stream, consumer string) int {
	for i := range c.nodes {
		if s := c.Server(i); s != nil && s.JetStreamIsConsumerLeader(clusterAccount, stream, consumer) {
			return i
		}
	}
	return -1
}

// poll calls ok every 20ms until it holds or timeout passes.
func poll(timeout time.Duration, ok func() bool) bool {
	for deadline := time.Now().Add(timeout); ; time.Sleep(20 * time.Millisecond) {
		if ok() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// WaitMetaLeader waits until a running node leads the meta group and every
// running node follows it (is current), and returns the leader's index.
func (c *Cluster) WaitMetaLeader(timeout time.Duration) (int, error) {
	leader := -1
	ok := poll(timeout, func() bool {
		if leader = c.MetaLeader(); leader < 0 {
			return false
		}
		for i := range c.nodes {
			if s := c.Server(i); s != nil && !s.JetStreamIsCurrent() {
				return false
			}
		}
		return true
	})
	if !ok {
		return -1, fmt.Errorf("no JetStream meta leader with every running node current after %v", timeout)
	}
	return leader, nil
}

// WaitStreamLeaders waits until each stream has a leader on a running node.
func (c *Cluster) WaitStreamLeaders(timeout time.Duration, streams ...string) error {
	var missing string
	ok := poll(timeout, func() bool {
		for _, st := range streams {
			if c.StreamLeader(st) < 0 {
				missing = st
				return false
			}
		}
		return true
	})
	if !ok {
		return fmt.Errorf("stream %s has no leader after %v", missing, timeout)
	}
	return nil
}

// WaitCurrent waits until the cluster has a meta leader and each stream a
// leader, with every running node current on the meta group and on each
// stream (a restarted node has caught up).
func (c *Cluster) WaitCurrent(timeout time.Duration, streams ...string) error {
	deadline := time.Now().Add(timeout)
	if _, err := c.WaitMetaLeader(timeout); err != nil {
		return err
	}
	if err := c.WaitStreamLeaders(time.Until(deadline), streams...); err != nil {
		return err
	}
	var behind string
	ok := poll(time.Until(deadline), func() bool {
		for _, st := range streams {
			for i := range c.nodes {
				if s := c.Server(i); s != nil && !s.JetStreamIsStreamCurrent(clusterAccount, st) {
					behind = c.nodes[i].name + " on " + st
					return false
				}
			}
		}
		return true
	})
	if !ok {
		return fmt.Errorf("node %s not current after %v", behind, timeout)
	}
	return nil
}

// FleetStreams names the stream behind every stream, bucket and object
// store bus.Setup and bus.SetupPrune create: what WaitCurrent should wait
// for once SetupBus has made the topology.
func FleetStreams() []string {
	return []string{bus.StreamDue, bus.StreamBuilt, bus.StreamSeeding, bus.StreamAnnounced, bus.StreamDLQ, bus.StreamMessages, bus.StreamConflicts,
		bus.StreamPrune, "KV_" + bus.BucketCommunities, "KV_" + bus.BucketCommunityKeys, "KV_" + bus.BucketState, "KV_" + bus.BucketFailures,
		"KV_" + bus.BucketTrackerPeers, "KV_" + bus.BucketSeeders, "KV_" + bus.BucketServing, "OBJ_" + bus.BucketObjects}
}

// Connect dials the cluster with every node's URL (reconnecting forever, so
// a client fails over when its node goes down).
func (c *Cluster) Connect(opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect(c.URLs(), append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}, opts...)...)
}

// setupRetry repeats SetupBus's attempts 100 ms apart, each bounded to
// 10 s; the caller's context alone bounds the whole.
var setupRetry = bus.RetryPolicy{First: 100 * time.Millisecond, Max: 100 * time.Millisecond, Budget: 24 * time.Hour, Attempt: 10 * time.Second}

// SetupBus connects to the cluster and sets up the fleet's topology with
// cfg (Replicas 0 means one per node), the message pruner's included (so a
// service starting later finds it in place), retrying while the cluster is
// still placing things: right after start the meta group may not have
// settled on peers yet.
func (c *Cluster) SetupBus(ctx context.Context, cfg bus.Config) (*bus.Bus, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = len(c.nodes)
	}
	nc, err := c.Connect()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	var seen []string // each attempt's error, for the report
	var b *bus.Bus
	// Each attempt bounded, as the services' (natsconf.SetupRetry): a
	// request whose answer is lost while the new cluster elects a stream's
	// leader is then repeated instead of waiting out ctx.
	err = setupRetry.Do(ctx, func(actx context.Context) error {
		t0 := time.Now()
		var err error
		if b, err = bus.Setup(actx, nc, cfg); err == nil {
			err = bus.SetupPrune(actx, b)
		}
		if err == nil {
			err = bus.EnsureMessagesLayout(actx, b)
		}
		if err != nil {
			seen = append(seen, fmt.Sprintf("at %v (took %v): %v", t0.Sub(start).Round(time.Millisecond),
				time.Since(t0).Round(time.Millisecond), err))
		}
		return err
	})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("%w (attempts: %s)", err, strings.Join(seen, "; "))
	}
	return b, nil
}

// ClusterBus connects to c with the topology at R3 and test-friendly
// timings; the connection closes with the test.
func ClusterBus(t testing.TB, c *Cluster, cfg bus.Config) *bus.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := c.SetupBus(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.NC.Close)
	if err := c.WaitCurrent(30*time.Second, FleetStreams()...); err != nil {
		t.Fatal(err)
	}
	return b
}
