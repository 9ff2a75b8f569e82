package faulttest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/redis/go-redis/v9"

	"github.com/archivefleet/archivefleet/internal/testenv"
)

// TestCredentialsFromEnvironment runs the archiver against a NATS server
// that requires a user and password and a Redis that requires a password,
// all given through the environment: it becomes ready and builds, and
// neither secret appears in its logs. Its HTTP endpoints bind to loopback.
func TestCredentialsFromEnvironment(t *testing.T) {
	const natsPass, redisPass = "nats-s3cret-value", "redis-s3cret-value"
	port := testenv.FreePort(t)
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: t.TempDir(),
		NoSigs: true, NoLog: true, Username: "fleet", Password: natsPass})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	redisPort := testenv.FreePort(t)
	e := &env{t: t, dir: t.TempDir(), redisPort: redisPort}
	e.redis = execRedis(t, redisPort, redisPass)
	defer e.stopRedis()
	httpPort := testenv.FreePort(t)
	p := e.start("archiver", "archiver",
		fmt.Sprintf("ARCHIVEFLEET_NATS_URL=nats://127.0.0.1:%d", port),
		"ARCHIVEFLEET_NATS_USER=fleet", "ARCHIVEFLEET_NATS_PASSWORD="+natsPass,
		fmt.Sprintf("ARCHIVEFLEET_REDIS_ADDR=127.0.0.1:%d", redisPort), "ARCHIVEFLEET_REDIS_PASSWORD="+redisPass,
		"ARCHIVEFLEET_WORK_DIR="+filepath.Join(e.dir, "a"), "ARCHIVEFLEET_INGEST_TOKEN=tok-s3cret",
		fmt.Sprintf("ARCHIVEFLEET_HTTP_ADDR=127.0.0.1:%d", httpPort))
	defer p.kill()
	var body string
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", httpPort))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(end) {
			t.Fatalf("archiver not ready with credentials from the environment: %s\n%s", body, p.tail(20))
		}
	}
	// Ingest without the bearer token is refused.
	resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/v1/communities/0x02cfca2ca218f099107c5d4b61cb17bd6566137dbecf7e4557984c882a16accd87/messages", httpPort), "application/json", strings.NewReader("[]"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("ingest without token: %d", resp.StatusCode)
	}
	p.stop(t)
	logs := p.log.String()
	for _, secret := range []string{natsPass, redisPass, "tok-s3cret"} {
		if strings.Contains(logs, secret) {
			t.Fatalf("a secret appears in the logs")
		}
	}
	if !regexp.MustCompile(`nats connected.*url=nats://(\[REDACTED\]@)?127\.0\.0\.1`).MatchString(logs) {
		t.Fatalf("connection not logged as expected:\n%s", p.tail(10))
	}
}

func execRedis(t *testing.T, port int, password string) *exec.Cmd {
	cmd := exec.Command("redis-server", "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--requirepass", password)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), Password: password})
	defer c.Close()
	for end := time.Now().Add(10 * time.Second); c.Ping(context.Background()).Err() != nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("redis did not start")
		}
	}
	return cmd
}
