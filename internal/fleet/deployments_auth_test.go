package fleet

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"gopkg.in/yaml.v3"

	"github.com/archivefleet/archivefleet/internal/deploysecrets"
	"github.com/archivefleet/archivefleet/internal/natsperm"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// yamlDocs decodes every document of a YAML file.
func yamlDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	for {
		var d map[string]any
		if err := dec.Decode(&d); errors.Is(err, io.EOF) {
			return docs
		} else if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		docs = append(docs, d)
	}
}

// dig follows keys (map keys, or list indexes as ints) into a decoded
// document; nil when a step is missing.
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

// userOf is the NATS user a workload (its app label, or Compose service)
// runs as.
func userOf(app string) string {
	if app == "setup" {
		return natsperm.Admin
	}
	return app
}

// TestDeploymentSecrets checks the shipped deployments against the
// secrets archivectl deploy-secrets makes: no default password anywhere and
// no Secret with values committed; under Compose every service reads its own
// user's env file and waits for the set-up; under Kubernetes every workload
// takes its own user's Secrets, each of which the generator makes, NATS its
// users, routes and certificates, and the network policies let only the
// fleet reach NATS, only archivers Redis, only the monitoring namespace the
// metrics, and anyone the public ports.
func TestDeploymentSecrets(t *testing.T) {
	err := filepath.WalkDir("../../deployments", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(raw, []byte("change-me")) {
			t.Errorf("%s holds a default secret (change-me)", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Compose.
	compose := yamlDocs(t, "../../deployments/compose.yaml")[0]
	services, _ := compose["services"].(map[string]any)
	for name, svc := range services {
		envFiles, _ := dig(svc, "env_file").([]any)
		switch name {
		case "nats":
			continue
		case "redis":
			if !slices.Equal(envFiles, []any{"${SECRETS_DIR:-./secrets}/" + deploysecrets.RedisEnv}) {
				t.Errorf("compose redis: env_file %v", envFiles)
			}
			continue
		}
		want := "${SECRETS_DIR:-./secrets}/" + deploysecrets.EnvFile(userOf(name))
		if !slices.Equal(envFiles, []any{want}) {
			t.Errorf("compose %s: env_file %v, want [%s]", name, envFiles, want)
		}
		if name != "setup" && dig(svc, "depends_on", "setup", "condition") != "service_completed_successfully" {
			t.Errorf("compose %s does not wait for the set-up: %v", name, dig(svc, "depends_on"))
		}
	}
	if dig(services, "setup", "depends_on", "nats", "condition") != "service_healthy" || !slices.Equal(dig(services, "setup", "command").([]any),
		[]any{"archivectl", "setup"}) {
		t.Errorf("compose setup: %v", services["setup"])
	}

	// Kubernetes: what the generator makes.
	secrets := deploySecrets(t)
	made := map[string]map[string]any{}
	for _, d := range yamlDocs(t, filepath.Join(secrets, deploysecrets.K8sSecrets)) {
		made[dig(d, "metadata", "name").(string)], _ = d["stringData"].(map[string]any)
	}
	files, _ := filepath.Glob("../../deployments/k8s/*.yaml")
	workloads, policies := map[string]bool{}, map[string]map[string]any{}
	for _, f := range files {
		for _, d := range yamlDocs(t, f) {
			kind, name := d["kind"], dig(d, "metadata", "name")
			switch kind {
			case "Secret":
				t.Errorf("%s commits Secret %v: Secrets come from archivectl deploy-secrets", f, name)
			case "NetworkPolicy":
				policies[name.(string)] = d
			case "Deployment", "StatefulSet", "Job":
				pod := dig(d, "spec", "template")
				app, _ := dig(pod, "metadata", "labels", "app").(string)
				if app == "nats" {
					vols := fmt.Sprint(dig(pod, "spec", "volumes"))
					for _, s := range []string{"nats-auth", "nats-tls"} {
						if made[s] == nil || !strings.Contains(vols, s) {
							t.Errorf("nats does not mount %s (generated: %v)", s, made[s] != nil)
						}
					}
					for _, key := range []string{"auth.conf", "routes.conf", "ca.crt", "server.key", "route.key"} {
						if made["nats-auth"][key] == nil && made["nats-tls"][key] == nil {
							t.Errorf("nats mounts %s, which no generated Secret has", key)
						}
					}
					continue
				}
				workloads[app] = true
				if dig(pod, "metadata", "labels", "app.kubernetes.io/part-of") != "archivefleet" {
					t.Errorf("%s: pods without the part-of label the network policies select", app)
				}
				user := userOf(app)
				if got := fmt.Sprint(dig(pod, "spec", "containers", 0, "envFrom")); !strings.Contains(got, "name:archivefleet-"+user+"]") {
					t.Errorf("%s: envFrom %s, want Secret archivefleet-%s", app, got, user)
				}
				if !strings.Contains(fmt.Sprint(dig(pod, "spec", "volumes")), "secretName:archivefleet-"+user+"-tls") {
					t.Errorf("%s does not mount its client certificate (archivefleet-%s-tls)", app, user)
				}
				if made["archivefleet-"+user]["ARCHIVEFLEET_NATS_PASSWORD"] == nil || made["archivefleet-"+user+"-tls"]["tls.key"] == nil {
					t.Errorf("the generator makes no Secrets for %s", user)
				}
			}
		}
	}
	for _, app := range []string{"setup", "scheduler", "archiver", "seeder", "announcer", "waku", "prober", "console"} {
		if !workloads[app] {
			t.Errorf("no %s workload", app)
		}
	}
	if made["archivefleet-archiver"]["ARCHIVEFLEET_REDIS_PASSWORD"] == nil || made["archivefleet-archiver"]["ARCHIVEFLEET_INGEST_TOKEN"] == nil {
		t.Error("the archiver's Secret lacks the Redis password or the ingest token")
	}

	// Network policies.
	for _, tc := range []struct {
		policy, rule string
	}{
		{"default-deny-ingress", "podSelector:map[]"},
		{"nats", "from:[map[podSelector:map[matchLabels:map[app.kubernetes.io/part-of:archivefleet]]]] ports:[map[port:4222"},
		{"nats", "from:[map[podSelector:map[matchLabels:map[app:nats]]]] ports:[map[port:6222"},
		{"redis", "from:[map[podSelector:map[matchLabels:map[app:archiver]]]] ports:[map[port:6379"},
		{"metrics", "from:[map[namespaceSelector:map[matchLabels:map[kubernetes.io/metadata.name:monitoring]]]] ports:[map[port:9100"},
		{"seeder-public", "map[port:9025 protocol:UDP]"},
		{"waku-public", "map[port:60000 protocol:TCP]"},
	} {
		if got := fmt.Sprint(policies[tc.policy]); !strings.Contains(got, tc.rule) {
			t.Errorf("network policy %s lacks %q: %s", tc.policy, tc.rule, got)
		}
	}
}

// TestClusterTLS runs two nodes of deployments/nats/cluster.conf with what
// archivectl deploy-secrets generated (loopback ports, no JetStream): they
// route to each other over mutual TLS as the route user; a service connects
// over TLS with its user and its client certificate, and is refused without
// the certificate, with another CA's view of the server, or with a wrong
// password.
func TestClusterTLS(t *testing.T) {
	secrets := deploySecrets(t)
	t.Setenv("NATS_CLIENT_VERIFY", "true")
	ports := [2][2]int{}
	for i := range ports {
		ports[i] = [2]int{testenv.FreePort(t), testenv.FreePort(t)}
	}
	var nodes []*server.Server
	for i := range ports {
		t.Setenv("SERVER_NAME", fmt.Sprintf("nats-%d", i))
		o := natsConfIn(t, secrets, "cluster.conf")
		// The generated routes dial nats-N.nats:6222; here the nodes are
		// on loopback, which the route certificate names too.
		r := o.Routes[0]
		var routes []*url.URL
		for j := range ports {
			routes = append(routes, &url.URL{Scheme: "nats", User: r.User, Host: fmt.Sprintf("127.0.0.1:%d", ports[j][1])})
		}
		o.Routes = routes
		o.Host, o.Port, o.HTTPPort, o.JetStream, o.NoSigs, o.NoLog = "127.0.0.1", ports[i][0], 0, false, true, true
		o.Cluster.Host, o.Cluster.Port, o.PidFile = "127.0.0.1", ports[i][1], ""
		s, err := server.NewServer(o)
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatal("nats not ready")
		}
		nodes = append(nodes, s)
	}
	for end := time.Now().Add(20 * time.Second); nodes[0].NumRoutes() == 0 || nodes[1].NumRoutes() == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the nodes did not route to each other (%d, %d routes)", nodes[0].NumRoutes(), nodes[1].NumRoutes())
		}
	}
	env, err := os.ReadFile(filepath.Join(secrets, deploysecrets.EnvFile(natsperm.Seeder)))
	if err != nil {
		t.Fatal(err)
	}
	var pass string
	for _, l := range strings.Split(string(env), "\n") {
		if v, ok := strings.CutPrefix(l, "ARCHIVEFLEET_NATS_PASSWORD="); ok {
			pass = v
		}
	}
	ca := filepath.Join(secrets, deploysecrets.CACert)
	cert := nats.ClientCert(filepath.Join(secrets, deploysecrets.ClientCert(natsperm.Seeder)), filepath.Join(secrets, deploysecrets.ClientKey(natsperm.Seeder)))
	other := deploySecrets(t) // another deployment's CA
	for _, tc := range []struct {
		name string
		opts []nats.Option
		ok   bool
	}{
		{"user, password, client certificate", []nats.Option{nats.RootCAs(ca), cert, nats.UserInfo(natsperm.Seeder, pass)}, true},
		{"no client certificate", []nats.Option{nats.RootCAs(ca), nats.UserInfo(natsperm.Seeder, pass)}, false},
		{"another CA", []nats.Option{nats.RootCAs(filepath.Join(other, deploysecrets.CACert)), cert, nats.UserInfo(natsperm.Seeder, pass)}, false},
		{"wrong password", []nats.Option{nats.RootCAs(ca), cert, nats.UserInfo(natsperm.Seeder, pass+"x")}, false},
	} {
		for i := range ports {
			nc, err := nats.Connect(fmt.Sprintf("tls://localhost:%d", ports[i][0]), append(tc.opts, nats.Timeout(5*time.Second))...)
			if tc.ok != (err == nil) {
				t.Errorf("%s, node %d: %v", tc.name, i, err)
			}
			if err == nil {
				if !nc.TLSRequired() {
					t.Errorf("%s: not TLS", tc.name)
				}
				nc.Close()
			}
		}
	}
}
