package testenv

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// ShippedNATSOptions parses the shipped single-server NATS configuration
// (deployments/nats/nats.conf) placed beside the generated auth files in
// secrets (archivectl deploy-secrets' folder), as the container's
// /etc/nats holds them: its users and permissions are the deployment's.
func ShippedNATSOptions(t testing.TB, secrets string) *server.Options {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(filepath.Join(root, "deployments", "nats", "nats.conf"))
	if err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(secrets, "nats", "nats.conf")
	if err := os.WriteFile(confPath, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(confPath)
	if err != nil {
		t.Fatal(err)
	}
	return opts
}
