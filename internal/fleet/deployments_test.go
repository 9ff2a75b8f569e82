package fleet

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/decred/dcrd/dcrec/secp256k1/v4"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/ctl"
	"github.com/archivefleet/archivefleet/internal/deploysecrets"
	"github.com/archivefleet/archivefleet/internal/natsconf"
	"github.com/archivefleet/archivefleet/internal/natsperm"
	"github.com/archivefleet/archivefleet/internal/observe"
	"github.com/archivefleet/archivefleet/internal/pruner"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/testenv"
	"github.com/archivefleet/archivefleet/internal/waku/lightpush"
	"github.com/archivefleet/archivefleet/internal/wakuedge"
	"github.com/archivefleet/archivefleet/internal/wakuwire"
)

// composeTool finds a Compose implementation that can validate a file
// offline: the docker CLI's plugin or Debian's docker-compose, which
// scripts/test installs.
func composeTool(t *testing.T) []string {
	if out, err := exec.Command("docker", "compose", "version").CombinedOutput(); err == nil && bytes.Contains(out, []byte("version")) {
		return []string{"docker", "compose"}
	}
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}
	}
	t.Skip("neither `docker compose` nor docker-compose is installed (scripts/test installs docker-compose)")
	return nil
}

// deploySecrets writes a deployment's secrets as archivectl deploy-secrets
// does (cheap password hashes) into a temp dir and returns it.
func deploySecrets(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "secrets")
	if _, err := deploysecrets.Generate(deploysecrets.Options{Dir: dir, BcryptCost: 4}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestComposeConfig has Compose itself check deployments/compose.yaml, alone
// and with the cluster override, as `docker compose config` would before
// `up`: schema, anchors, interpolation, env files, depends_on conditions,
// with the secrets archivectl deploy-secrets writes. Spoiled copies must be
// refused, so a validator that accepted anything would fail the test too;
// so must the file without generated secrets.
func TestComposeConfig(t *testing.T) {
	tool := composeTool(t)
	good, err := os.ReadFile("../../deployments/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	secrets := deploySecrets(t)
	for _, tc := range []struct {
		name    string
		file    []byte
		secrets string
		cluster bool
		ok      bool
	}{
		{"deployments/compose.yaml", good, secrets, false, true},
		{"with nats/compose.cluster.yaml", good, secrets, true, true},
		{"no secrets generated", good, t.TempDir(), false, false},
		{"unknown service key", bytes.Replace(good, []byte("    command: [\"scheduler\"]"), []byte("    comand: [\"scheduler\"]"), 1), secrets, false, false},
		{"replicas not a number", bytes.Replace(good, []byte("replicas: 3"), []byte("replicas: three"), 1), secrets, false, false},
		{"unknown depends_on condition", bytes.Replace(good, []byte("condition: service_completed_successfully"), []byte("condition: service_done"), 1),
			secrets, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.ok && bytes.Equal(tc.file, good) && tc.secrets == secrets {
				t.Fatal("the spoiled copy equals the original: the replacement no longer matches")
			}
			path := filepath.Join(t.TempDir(), "compose.yaml")
			if err := os.WriteFile(path, tc.file, 0o644); err != nil {
				t.Fatal(err)
			}
			// The project directory is deployments/, so build contexts and
			// the other files resolve as they do for the original.
			args := append(tool[1:], "-p", "archivefleet", "--project-directory", "../../deployments", "-f", path)
			if tc.cluster {
				args = append(args, "-f", "../../deployments/nats/compose.cluster.yaml")
			}
			cmd := exec.Command(tool[0], append(args, "config", "-q")...)
			cmd.Env = append(os.Environ(), "SECRETS_DIR="+tc.secrets)
			out, err := cmd.CombinedOutput()
			if tc.ok && err != nil {
				t.Fatalf("%s config: %v\n%s", strings.Join(tool, " "), err, out)
			}
			if !tc.ok && err == nil {
				t.Fatalf("%s config accepted a spoiled file", strings.Join(tool, " "))
			}
		})
	}
}

// knownVariables lists every ARCHIVEFLEET_* variable a service reads, from
// the env tags of the config structs.
func knownVariables() map[string]bool {
	known := map[string]bool{}
	for _, c := range []any{&SchedulerConfig{}, &ArchiverConfig{}, &SeederConfig{}, &AnnouncerConfig{}, &WakuConfig{}, &AllInOneConfig{}} {
		natsconf.Walk(c, func(v natsconf.Var) error {
			known[v.Name] = true
			return nil
		})
	}
	if len(known) < 40 {
		panic(fmt.Sprintf("only %d variables found", len(known)))
	}
	return known
}

// TestDeployments parses every YAML document under deployments/ and checks
// that each ARCHIVEFLEET_* variable they set is one a service reads, so a
// renamed setting cannot silently fall back to its default in production.
func TestDeployments(t *testing.T) {
	known := knownVariables()
	varRef := regexp.MustCompile(`ARCHIVEFLEET_[A-Z0-9_]+`)
	files, _ := filepath.Glob("../../deployments/*.yaml")
	more, _ := filepath.Glob("../../deployments/k8s/*.yaml")
	files = append(files, more...)
	if len(files) < 3 {
		t.Fatalf("found %d deployment files", len(files))
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		docs := 0
		for {
			var doc any
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			docs++
		}
		if docs == 0 {
			t.Fatalf("%s: no YAML document", f)
		}
		for _, v := range varRef.FindAllString(string(raw), -1) {
			if !known[v] && !strings.HasSuffix(v, "_") {
				t.Errorf("%s sets %s, which no service reads", f, v)
			}
		}
	}
	for _, conf := range []string{"../../deployments/nats/cluster.conf", "../../deployments/Dockerfile"} {
		if _, err := os.Stat(conf); err != nil {
			t.Error(err)
		}
	}
}

// noPeer is a Waku peer with no peer.
type noPeer struct{}

func (noPeer) Publish(context.Context, string, *wakuwire.Message) ([32]byte, error) {
	return [32]byte{}, nil
}
func (noPeer) TopicPeers(string) int { return 0 }
func (noPeer) LightPush(context.Context, peer.AddrInfo, string, *wakuwire.Message) (lightpush.Result, error) {
	return lightpush.Result{}, errors.New("no peer")
}

// descRecorder is a Registerer that records the metric names it is given.
type descRecorder struct{ names map[string]bool }

func (d *descRecorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	for desc := range ch {
		if m := regexp.MustCompile(`fqName: "([^"]+)"`).FindStringSubmatch(desc.String()); m != nil {
			d.names[m[1]] = true
		}
	}
	return nil
}
func (d *descRecorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		d.Register(c)
	}
}
func (d *descRecorder) Unregister(prometheus.Collector) bool { return true }

// exportedMetrics returns the name of every metric a service or the
// prober (archivectl probe) exports.
func exportedMetrics(t *testing.T) map[string]bool {
	rec := &descRecorder{names: map[string]bool{}}
	b := &bus.Bus{}
	_, st := newArchiver(b, nil, ArchiverConfig{}, testenv.Logger(), rec)
	newPruner(st, pruner.DefaultGrace, testenv.Logger(), rec)
	newSeeder(b, SeederConfig{}, testenv.Logger(), rec)
	newAnnouncer(b, AnnouncerConfig{}, testenv.Logger(), rec)
	newScheduler(b, SchedulerConfig{}, testenv.Logger(), rec)
	if _, err := wakuedge.New(wakuedge.Service{Bus: b, Registry: &registry.Registry{}, Peer: noPeer{},
		Config: wakuedge.Config{Signer: secp256k1.PrivKeyFromBytes([]byte{1})}}, rec); err != nil {
		t.Fatal(err)
	}
	reg := observe.NewRegistry("test")
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		rec.names[mf.GetName()] = true
	}
	ctl.NewProbeMetrics(rec)
	return rec.names
}

// queriedMetric finds the metric names in a PromQL expression.
var queriedMetric = regexp.MustCompile(`(archivefleet_[a-z_]+|process_[a-z_]+)`)

// isExported tells whether a queried name is an exported metric or one of
// a histogram's series.
func isExported(names map[string]bool, name string) bool {
	base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
	return names[base] || names[name]
}

// TestDashboardMetrics checks every metric the Grafana dashboard queries is
// exported by a service, so a renamed metric cannot leave a panel empty.
func TestDashboardMetrics(t *testing.T) {
	names := exportedMetrics(t)
	raw, err := os.ReadFile("../../deployments/grafana/archivefleet.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, name := range queriedMetric.FindAllString(tg.Expr, -1) {
				if !isExported(names, name) {
					t.Errorf("panel %q queries %s, which no service exports", p.Title, name)
				}
				checked++
			}
		}
	}
	if checked < 15 {
		t.Fatalf("only %d metric references checked", checked)
	}
}

// TestAlertRules checks every metric the Prometheus alert rules query is
// exported by a service or the prober, so a renamed metric cannot silence
// an alert; with promtool installed, it also has promtool check the rules
// and run their unit tests (deployments/prometheus/alerts_test.yaml).
func TestAlertRules(t *testing.T) {
	names := exportedMetrics(t)
	raw, err := os.ReadFile("../../deployments/prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name  string
			Rules []struct{ Alert, Expr string }
		}
	}
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	checked, alerts := 0, map[string]bool{}
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" {
				t.Errorf("group %s: a rule without alert or expr: %+v", g.Name, r)
			}
			alerts[r.Alert] = true
			for _, name := range queriedMetric.FindAllString(r.Expr, -1) {
				if !isExported(names, name) {
					t.Errorf("alert %s queries %s, which no service exports", r.Alert, name)
				}
				checked++
			}
		}
	}
	for _, a := range []string{"MagnetNotFetchable", "ProbeFailing", "WakuNoPeers"} {
		if !alerts[a] {
			t.Errorf("no alert %s", a)
		}
	}
	if checked < 6 {
		t.Fatalf("only %d metric references checked", checked)
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool not installed: scripts/test installs Debian's prometheus package for it")
		}
		t.Log("promtool not installed (scripts/test installs it): rule syntax and rule unit tests not checked")
		return
	}
	for _, args := range [][]string{{"check", "rules", "alerts.yaml"}, {"test", "rules", "alerts_test.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "../../deployments/prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// natsConfIn copies a NATS configuration of deployments/nats into the
// generated secrets' nats/ folder, which mirrors the container's /etc/nats
// (auth/, tls/), with its /etc/nats/ paths pointed there, and parses it.
func natsConfIn(t *testing.T, secrets, name string) *server.Options {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("../../deployments/nats", name))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(secrets, "nats")
	raw = bytes.ReplaceAll(raw, []byte("/etc/nats/"), []byte(dir+"/"))
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return o
}

// TestNATSConfigs has the NATS server's own parser read every NATS
// configuration under deployments/ (Compose's single server and the
// cluster) with what archivectl deploy-secrets generates: each must enable
// JetStream, take 8 MiB messages like the all-in-one's embedded server and
// have the fleet's users (and no other); the cluster's clients and routes
// use TLS (clients verified when NATS_CLIENT_VERIFY says so), the routes the
// route user.
func TestNATSConfigs(t *testing.T) {
	files, _ := filepath.Glob("../../deployments/nats/*.conf")
	if len(files) < 2 {
		t.Fatalf("found %d NATS configs", len(files))
	}
	secrets := deploySecrets(t)
	t.Setenv("SERVER_NAME", "nats-0")
	t.Setenv("NATS_CLIENT_VERIFY", "true")
	compose, err := os.ReadFile("../../deployments/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		o := natsConfIn(t, secrets, filepath.Base(f))
		if !o.JetStream || o.MaxPayload != DefaultEmbeddedPayload {
			t.Errorf("%s: jetstream %v, max_payload %d (want %d)", f, o.JetStream, o.MaxPayload, DefaultEmbeddedPayload)
		}
		if len(o.Users) != len(natsperm.Users()) || o.Username != "" || o.Authorization != "" {
			t.Errorf("%s: %d users (want the fleet's %d), single user %q, token set %v", f, len(o.Users), len(natsperm.Users()),
				o.Username, o.Authorization != "")
		}
		if filepath.Base(f) != "cluster.conf" {
			continue
		}
		if o.TLSConfig == nil || o.TLSConfig.ClientAuth != tls.RequireAndVerifyClientCert {
			t.Errorf("%s: client TLS %+v, want verified client certificates", f, o.TLSConfig)
		}
		if o.Cluster.TLSConfig == nil || o.Cluster.TLSConfig.ClientAuth != tls.RequireAndVerifyClientCert || o.Cluster.Username != "route" ||
			len(o.Routes) != 3 {
			t.Errorf("%s: routes: TLS %v, user %q, %d routes", f, o.Cluster.TLSConfig != nil, o.Cluster.Username, len(o.Routes))
		}
	}
	if !bytes.Contains(compose, []byte("./nats/nats.conf:/etc/nats/nats.conf")) || !bytes.Contains(compose, []byte(`"-c", "/etc/nats/nats.conf"`)) ||
		!bytes.Contains(compose, []byte("${SECRETS_DIR:-./secrets}/nats/auth:/etc/nats/auth:ro")) {
		t.Error("compose.yaml does not run NATS with deployments/nats/nats.conf and the generated users")
	}
	// k8s runs the cluster with cluster.conf verbatim in a ConfigMap.
	conf, err := os.ReadFile("../../deployments/nats/cluster.conf")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("../../deployments/k8s/nats.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	found := false
	for {
		var doc struct {
			Kind string
			Data map[string]string
		}
		if err := dec.Decode(&doc); err != nil {
			break
		}
		if doc.Kind == "ConfigMap" {
			found = true
			if doc.Data["nats.conf"] != string(conf) {
				t.Error("k8s/nats.yaml's ConfigMap nats.conf differs from deployments/nats/cluster.conf")
			}
		}
	}
	if !found {
		t.Error("k8s/nats.yaml has no ConfigMap with the NATS configuration")
	}
}
