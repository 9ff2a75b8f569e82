package deploysecrets_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"

	"github.com/archivefleet/archivefleet/internal/deploysecrets"
	"github.com/archivefleet/archivefleet/internal/natsperm"
)

func cert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(raw)
	if b == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestGenerate checks what a deployment gets: secrets 0600 in 0700
// folders, certificates that chain to the CA for the names the cluster and
// Kubernetes use, each user's password matching the hash the server gets,
// distinct secrets, Kubernetes Secrets for every user, and a second run
// that refuses to replace them unless forced.
func TestGenerate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets")
	s, err := deploysecrets.Generate(deploysecrets.Options{Dir: dir, BcryptCost: 4})
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		want := os.FileMode(0o600)
		switch {
		case d.IsDir():
			want = 0o700
		case strings.HasSuffix(path, ".crt"):
			want = 0o644
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Every secret distinct and none in a certificate or the server's
	// configuration in clear (the route password aside: nodes dial with it).
	seen := map[string]bool{}
	for name, p := range s.Passwords {
		if len(p) < 40 || seen[p] {
			t.Fatalf("password of %s: %d characters, repeated %v", name, len(p), seen[p])
		}
		seen[p] = true
	}
	if seen[s.IngestToken] || seen[s.RedisPass] || s.IngestToken == s.RedisPass {
		t.Fatal("a secret is reused")
	}
	authConf := filepath.Join(dir, deploysecrets.AuthConf)
	o, err := server.ProcessConfigFile(authConf)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(authConf)
	for _, u := range o.Users {
		if bytes.Contains(raw, []byte(s.Passwords[u.Username])) {
			t.Fatalf("%s's password is in the server's configuration", u.Username)
		}
		if bcrypt.CompareHashAndPassword([]byte(u.Password), []byte(s.Passwords[u.Username])) != nil {
			t.Fatalf("%s: the hash does not match the password", u.Username)
		}
		env, err := os.ReadFile(filepath.Join(dir, deploysecrets.EnvFile(u.Username)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(env, []byte("ARCHIVEFLEET_NATS_USER="+u.Username+"\n")) ||
			!bytes.Contains(env, []byte("ARCHIVEFLEET_NATS_PASSWORD="+s.Passwords[u.Username]+"\n")) {
			t.Fatalf("env file of %s:\n%s", u.Username, env)
		}
		if hasToken := bytes.Contains(env, []byte("ARCHIVEFLEET_INGEST_TOKEN="+s.IngestToken)); hasToken != (u.Username == natsperm.Archiver || u.Username == natsperm.Ingest || u.Username == natsperm.Console) {
			t.Fatalf("%s's env file has the ingest token: %v", u.Username, hasToken)
		}
	}
	routes, _ := os.ReadFile(filepath.Join(dir, deploysecrets.RoutesConf))
	if !bytes.Contains(routes, []byte("route:"+s.Passwords["route"]+"@nats-2.nats:6222")) {
		t.Fatalf("routes.conf:\n%s", routes)
	}

	// Certificates.
	ca := cert(t, filepath.Join(dir, deploysecrets.CACert))
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, tc := range []struct {
		file  string
		name  string
		usage x509.ExtKeyUsage
	}{
		{deploysecrets.ServerCert, "nats-1.nats", x509.ExtKeyUsageServerAuth},
		{deploysecrets.ServerCert, "nats-0.nats.archivefleet.svc", x509.ExtKeyUsageServerAuth},
		{deploysecrets.ServerCert, "nats.archivefleet.svc.cluster.local", x509.ExtKeyUsageServerAuth},
		{deploysecrets.ServerCert, "127.0.0.1", x509.ExtKeyUsageServerAuth},
		{deploysecrets.RouteCert, "nats-2.nats", x509.ExtKeyUsageServerAuth},
		{deploysecrets.RouteCert, "", x509.ExtKeyUsageClientAuth},
		{deploysecrets.ClientCert(natsperm.Seeder), "", x509.ExtKeyUsageClientAuth},
	} {
		c := cert(t, filepath.Join(dir, tc.file))
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: tc.name, KeyUsages: []x509.ExtKeyUsage{tc.usage}}); err != nil {
			t.Errorf("%s for %q (%v): %v", tc.file, tc.name, tc.usage, err)
		}
	}
	if c := cert(t, filepath.Join(dir, deploysecrets.ClientCert(natsperm.Seeder))); c.Subject.CommonName != natsperm.Seeder {
		t.Errorf("seeder's client certificate is for %q", c.Subject.CommonName)
	}
	if _, err := cert(t, filepath.Join(dir, deploysecrets.ClientCert(natsperm.Seeder))).Verify(x509.VerifyOptions{Roots: roots,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("a client certificate serves as a server's")
	}

	// Kubernetes Secrets: the NATS ones and two per user.
	manifests, err := os.Open(filepath.Join(dir, deploysecrets.K8sSecrets))
	if err != nil {
		t.Fatal(err)
	}
	defer manifests.Close()
	names := map[string]map[string]string{}
	dec := yaml.NewDecoder(manifests)
	for {
		var doc struct {
			Kind       string
			Metadata   struct{ Name, Namespace string }
			StringData map[string]string `yaml:"stringData"`
		}
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if doc.Kind != "Secret" || doc.Metadata.Namespace != "archivefleet" {
			t.Fatalf("%+v", doc)
		}
		names[doc.Metadata.Name] = doc.StringData
	}
	for _, u := range natsperm.Users() {
		if names["archivefleet-"+u.Name]["ARCHIVEFLEET_NATS_PASSWORD"] != s.Passwords[u.Name] || names["archivefleet-"+u.Name+"-tls"]["tls.key"] == "" {
			t.Errorf("no Secrets for %s", u.Name)
		}
	}
	if names["nats-auth"]["auth.conf"] == "" || names["nats-tls"]["server.key"] == "" || names["redis"]["REDIS_PASSWORD"] != s.RedisPass {
		t.Error("NATS or Redis Secrets missing")
	}

	// A second run keeps what is there, unless forced.
	if _, err := deploysecrets.Generate(deploysecrets.Options{Dir: dir, BcryptCost: 4}); err == nil || !strings.Contains(err.Error(), "-force") {
		t.Fatalf("second run: %v", err)
	}
	again, err := deploysecrets.Generate(deploysecrets.Options{Dir: dir, BcryptCost: 4, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if again.Passwords[natsperm.Admin] == s.Passwords[natsperm.Admin] {
		t.Fatal("-force kept the old password")
	}
}
