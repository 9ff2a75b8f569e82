// Package faulttest runs the fleet's services as real processes and injects
// faults: SIGKILL, restarts of NATS and Redis, duplicate and poisoned events.
// Every test is bounded in time and uses loopback addresses only.
package faulttest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/redis/go-redis/v9"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fleet"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "archivefleet-bin-")
	if err != nil {
		panic(err)
	}
	cmd := exec.Command("go", "build", "-o", dir+"/", "../../cmd/scheduler", "../../cmd/archiver", "../../cmd/seeder", "../../cmd/announcer", "../../cmd/waku", "../../cmd/archivectl")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build services:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is one test's world: NATS on a fixed port and store dir (so it can be
// restarted), a redis-server child, and service processes.
type env struct {
	t         *testing.T
	dir       string
	natsPort  int
	ns        *server.Server
	redisPort int
	redis     *exec.Cmd
	procs     []*proc
	ctl       *bus.Bus
	mu        sync.Mutex
}

func newEnv(t *testing.T) *env {
	e := &env{t: t, dir: t.TempDir(), natsPort: testenv.FreePort(t), redisPort: testenv.FreePort(t)}
	e.startNATS()
	e.startRedis()
	e.ctl = e.connect()
	t.Cleanup(func() {
		for _, p := range e.procs {
			p.kill()
		}
		if t.Failed() {
			for _, p := range e.procs {
				t.Logf("--- %s log (tail):\n%s", p.name, p.tail(40))
			}
		}
		e.ctl.NC.Close()
		e.stopRedis()
		e.stopNATS()
	})
	return e
}

func (e *env) natsURL() string { return fmt.Sprintf("nats://127.0.0.1:%d", e.natsPort) }

func (e *env) startNATS() {
	s, err := fleet.EmbeddedNATS(filepath.Join(e.dir, "nats"), "127.0.0.1", e.natsPort)
	if err != nil {
		e.t.Fatal(err)
	}
	e.ns = s
}

func (e *env) stopNATS() {
	if e.ns != nil {
		fleet.StopNATS(context.Background(), e.ns)
		e.ns = nil
	}
}

func (e *env) startRedis() {
	e.redis = exec.Command("redis-server", "--port", strconv.Itoa(e.redisPort), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", e.dir)
	if err := e.redis.Start(); err != nil {
		e.t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: e.redisAddr()})
	defer c.Close()
	for end := time.Now().Add(10 * time.Second); c.Ping(context.Background()).Err() != nil; {
		if time.Now().After(end) {
			e.t.Fatal("redis did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) stopRedis() {
	if e.redis != nil {
		e.redis.Process.Kill()
		e.redis.Wait()
		e.redis = nil
	}
}

func (e *env) redisAddr() string { return fmt.Sprintf("127.0.0.1:%d", e.redisPort) }

func (e *env) connect() *bus.Bus {
	c := fleet.Common{NATSURL: e.natsURL(), AckWait: 3 * time.Second, MaxDeliver: 20, Replicas: 1}
	b, err := c.Connect(context.Background(), "faulttest", testenv.Logger())
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// proc is a service process.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *testenv.Buffer
	done chan struct{}
}

// start runs a service binary with the shared settings plus extra.
func (e *env) start(name, bin string, extra ...string) *proc {
	cmd := exec.Command(filepath.Join(binDir, bin))
	cmd.Env = append(os.Environ(),
		"ARCHIVEFLEET_NATS_URL="+e.natsURL(),
		"ARCHIVEFLEET_REDIS_ADDR="+e.redisAddr(),
		"ARCHIVEFLEET_HTTP_ADDR=127.0.0.1:0",
		"ARCHIVEFLEET_ACK_WAIT=3s",
		"ARCHIVEFLEET_LOG_FORMAT=text",
		"ARCHIVEFLEET_LOG_LEVEL=debug",
		// Windows here end at about now: build them at once. Tests of the
		// settle time pass their own.
		"ARCHIVEFLEET_SETTLE=0s",
	)
	cmd.Env = append(cmd.Env, extra...)
	p := &proc{name: name, cmd: cmd, log: &testenv.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	e.mu.Lock()
	e.procs = append(e.procs, p)
	e.mu.Unlock()
	return p
}

func (p *proc) kill() {
	select {
	case <-p.done:
	default:
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// stop sends SIGTERM and waits for a graceful exit.
func (p *proc) stop(t *testing.T) {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not stop within 30s of SIGTERM", p.name)
	}
}

// waitLog waits for a log line containing all of words.
func (p *proc) waitLog(t *testing.T, timeout time.Duration, words ...string) string {
	t.Helper()
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		sc := bufio.NewScanner(strings.NewReader(p.log.String()))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			ok := true
			for _, w := range words {
				ok = ok && strings.Contains(sc.Text(), w)
			}
			if ok {
				return sc.Text()
			}
		}
	}
	t.Fatalf("%s: no log line with %q within %v", p.name, words, timeout)
	return ""
}

func (p *proc) tail(n int) string {
	lines := strings.Split(strings.TrimRight(p.log.String(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
