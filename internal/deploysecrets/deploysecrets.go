// Package deploysecrets makes the secrets a deployment of the fleet needs,
// from crypto/rand, into one folder: a password per NATS user (the server
// gets bcrypt hashes in its authorization include, written with the
// permissions of internal/natsperm), a route user for the NATS cluster, the
// ingest token, the Redis password, a TLS CA with server, route and client
// certificates (ECDSA P-256), environment files for Compose and Kubernetes
// Secret manifests. Secrets are written 0600 in 0700 folders; certificates
// are public and written 0644 (a container reads its CA as another user).
package deploysecrets

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"

	"github.com/archivefleet/archivefleet/internal/natsperm"
)

// Paths of what Generate writes, relative to its folder. nats/ mirrors the
// NATS container's /etc/nats: the shipped configurations include
// auth/auth.conf (and, clustered, auth/routes.conf) and read tls/.
const (
	AuthConf     = "nats/auth/auth.conf"
	RoutesConf   = "nats/auth/routes.conf"
	CACert       = "nats/tls/ca.crt"
	ServerCert   = "nats/tls/server.crt"
	ServerKey    = "nats/tls/server.key"
	RouteCert    = "nats/tls/route.crt"
	RouteKey     = "nats/tls/route.key"
	CAKey        = "ca/ca.key"
	K8sSecrets   = "k8s/secrets.yaml"
	RedisEnv     = "env/redis.env"
	routeUser    = "route"
	passwordSize = 32 // bytes of crypto/rand per password or token
	// DefaultBcryptCost is nats-server's own tool's (nats server passwd):
	// a server checks a password in about 150 ms.
	DefaultBcryptCost = 11
)

// EnvFile is the Compose environment file of a NATS user's processes.
func EnvFile(user string) string { return "env/" + user + ".env" }

// ClientCert and ClientKey are a NATS user's TLS client certificate.
func ClientCert(user string) string { return "tls/" + user + ".crt" }

// ClientKey is the private key of ClientCert.
func ClientKey(user string) string { return "tls/" + user + ".key" }

// Options configures Generate.
type Options struct {
	// Dir receives the files. It may exist, but not hold secrets of an
	// earlier run unless Force is set.
	Dir   string
	Force bool
	// Namespace is the Kubernetes namespace of the Secrets and of the
	// NATS service's names in the certificates ("archivefleet").
	Namespace string
	// NATSNodes are the cluster's node names, each also reachable as
	// <node>.nats (deployments/nats/cluster.conf routes): nats-0..2.
	NATSNodes []string
	// BcryptCost of the password hashes the server checks at each connect
	// (0: DefaultBcryptCost).
	BcryptCost int
}

// Secrets is what Generate made, for the caller to report or use.
type Secrets struct {
	// Passwords of the NATS users by name ("route" included).
	Passwords   map[string]string
	IngestToken string
	RedisPass   string
	// Files written, relative to the folder.
	Files []string
}

// Generate writes a new set of secrets into o.Dir.
func Generate(o Options) (*Secrets, error) {
	if o.Namespace == "" {
		o.Namespace = "archivefleet"
	}
	if len(o.NATSNodes) == 0 {
		o.NATSNodes = []string{"nats-0", "nats-1", "nats-2"}
	}
	if o.BcryptCost == 0 {
		o.BcryptCost = DefaultBcryptCost
	}
	if o.BcryptCost < bcrypt.MinCost || o.BcryptCost > bcrypt.MaxCost {
		return nil, fmt.Errorf("bcrypt cost %d is out of range %d..%d", o.BcryptCost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	if !o.Force {
		for _, f := range []string{AuthConf, K8sSecrets, CAKey, EnvFile(natsperm.Admin)} {
			if _, err := os.Stat(filepath.Join(o.Dir, f)); err == nil {
				return nil, fmt.Errorf("%s already holds secrets (%s): not replacing them; give -force to make new ones "+
					"(every service, the NATS servers and Redis then need the new ones)", o.Dir, f)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
		}
	}
	s := &Secrets{Passwords: map[string]string{}}
	users := natsperm.Users()
	hashes := map[string]string{}
	for _, u := range append(slices.Clone(users), natsperm.User{Name: routeUser}) {
		p, err := password()
		if err != nil {
			return nil, err
		}
		s.Passwords[u.Name] = p
		h, err := bcrypt.GenerateFromPassword([]byte(p), o.BcryptCost)
		if err != nil {
			return nil, err
		}
		hashes[u.Name] = string(h)
	}
	var err error
	if s.IngestToken, err = password(); err != nil {
		return nil, err
	}
	if s.RedisPass, err = password(); err != nil {
		return nil, err
	}
	w := &writer{dir: o.Dir, s: s}

	auth, err := natsperm.Authorization(users, hashes)
	if err != nil {
		return nil, err
	}
	w.secret(AuthConf, auth)
	w.secret(RoutesConf, routesConf(o, s.Passwords[routeUser], hashes[routeUser]))

	// TLS: a CA, the client port's certificate, the routes' (presented
	// both ways) and one client certificate per service user.
	ca, err := newCA()
	if err != nil {
		return nil, err
	}
	w.public(CACert, ca.certPEM)
	w.secret(CAKey, ca.keyPEM)
	dns, ips := o.serverNames()
	srv, err := ca.issue("archivefleet NATS server", dns, ips, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return nil, err
	}
	w.public(ServerCert, srv.certPEM)
	w.secret(ServerKey, srv.keyPEM)
	route, err := ca.issue("archivefleet NATS route", dns, ips, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	w.public(RouteCert, route.certPEM)
	w.secret(RouteKey, route.keyPEM)
	clients := map[string]*certKey{}
	for _, u := range users {
		c, err := ca.issue(u.Name, nil, nil, x509.ExtKeyUsageClientAuth)
		if err != nil {
			return nil, err
		}
		clients[u.Name] = c
		w.public(ClientCert(u.Name), c.certPEM)
		w.secret(ClientKey(u.Name), c.keyPEM)
	}

	for _, u := range users {
		w.secret(EnvFile(u.Name), envFile(s.env(u.Name)))
	}
	w.secret(RedisEnv, envFile([][2]string{{"REDIS_PASSWORD", s.RedisPass}}))
	manifests, err := k8sSecrets(o, s, users, auth, w.text(RoutesConf), ca, srv, route, clients)
	if err != nil {
		return nil, err
	}
	w.secret(K8sSecrets, manifests)
	if w.err != nil {
		return nil, w.err
	}
	return s, nil
}

// env is what a user's processes read from the environment: their NATS
// user and password, and the archiver's Redis password and ingest token
// (the ingest user's clients need the token too).
func (s *Secrets) env(user string) [][2]string {
	kv := [][2]string{{"ARCHIVEFLEET_NATS_USER", user}, {"ARCHIVEFLEET_NATS_PASSWORD", s.Passwords[user]}}
	switch user {
	case natsperm.Archiver:
		kv = append(kv, [2]string{"ARCHIVEFLEET_REDIS_PASSWORD", s.RedisPass}, [2]string{"ARCHIVEFLEET_INGEST_TOKEN", s.IngestToken})
	case natsperm.Ingest, natsperm.Console: // the console's operator token is the ingest token
		kv = append(kv, [2]string{"ARCHIVEFLEET_INGEST_TOKEN", s.IngestToken})
	}
	return kv
}

func envFile(kv [][2]string) string {
	var b strings.Builder
	b.WriteString("# Generated by archivectl deploy-secrets: secret, keep it 0600.\n")
	for _, p := range kv {
		fmt.Fprintf(&b, "%s=%s\n", p[0], p[1])
	}
	return b.String()
}

// password is passwordSize random bytes, URL-safe base64 (usable as is in
// a URL, an environment file, YAML and a NATS configuration string).
func password() (string, error) {
	b := make([]byte, passwordSize)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// routesConf is the cluster block's include: the route user every node
// accepts (bcrypt) and the routes it dials with it (cluster.conf's nodes).
func routesConf(o Options, pass, hash string) string {
	var b strings.Builder
	b.WriteString("# Routes between the NATS nodes (included in deployments/nats/cluster.conf's cluster block),\n" +
		"# written by archivectl deploy-secrets: the route user every node accepts and the routes it dials.\n")
	fmt.Fprintf(&b, "authorization {\n  user: %q\n  password: %q\n  timeout: 2\n}\nroutes: [\n", routeUser, hash)
	for _, n := range o.NATSNodes {
		fmt.Fprintf(&b, "  %q\n", fmt.Sprintf("nats://%s:%s@%s.nats:6222", routeUser, pass, n))
	}
	b.WriteString("]\n")
	return b.String()
}

// serverNames are the names and addresses the NATS nodes answer to: the
// cluster's node names as routes and Compose use them (<node>.nats), the
// Kubernetes service names, and loopback (a port-forward).
func (o Options) serverNames() ([]string, []net.IP) {
	ns := o.Namespace
	dns := []string{"nats", "*.nats", "nats." + ns + ".svc", "*.nats." + ns + ".svc", "nats." + ns + ".svc.cluster.local",
		"*.nats." + ns + ".svc.cluster.local", "localhost"}
	for _, n := range o.NATSNodes {
		dns = append(dns, n+".nats")
	}
	return dns, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
}

// writer writes files, keeping the first error.
type writer struct {
	dir   string
	s     *Secrets
	err   error
	texts map[string]string
}

func (w *writer) text(name string) string { return w.texts[name] }

func (w *writer) secret(name, content string) { w.write(name, content, 0o600) }
func (w *writer) public(name, content string) { w.write(name, content, 0o644) }

func (w *writer) write(name, content string, mode os.FileMode) {
	if w.err != nil {
		return
	}
	if w.texts == nil {
		w.texts = map[string]string{}
	}
	w.texts[name] = content
	path := filepath.Join(w.dir, name)
	if w.err = os.MkdirAll(filepath.Dir(path), 0o700); w.err != nil {
		return
	}
	// A file of an earlier run (with -force) may be there with another
	// mode: replace it rather than write through it.
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		w.err = err
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		w.err = err
		return
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		w.err = err
		return
	}
	if w.err = f.Close(); w.err == nil {
		w.s.Files = append(w.s.Files, name)
	}
}

// certKey is a PEM certificate with its PEM private key.
type certKey struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM string
	keyPEM  string
}

// Validity of what Generate issues: the CA outlives the certificates, which
// a new run replaces.
const (
	caValidity   = 10 * 365 * 24 * time.Hour
	certValidity = 825 * 24 * time.Hour
)

func newCA() (*certKey, error) {
	return sign(nil, &x509.Certificate{Subject: pkix.Name{CommonName: "archivefleet NATS CA", Organization: []string{"archivefleet"}},
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign},
		caValidity)
}

func (ca *certKey) issue(cn string, dns []string, ips []net.IP, usage ...x509.ExtKeyUsage) (*certKey, error) {
	return sign(ca, &x509.Certificate{Subject: pkix.Name{CommonName: cn, Organization: []string{"archivefleet"}},
		DNSNames: dns, IPAddresses: ips, ExtKeyUsage: usage, KeyUsage: x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true}, certValidity)
}

// sign makes a key and a certificate from tmpl, signed by ca (self-signed
// when ca is nil).
func sign(ca *certKey, tmpl *x509.Certificate, validity time.Duration) (*certKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour).UTC() // clocks a little behind
	tmpl.NotAfter = time.Now().Add(validity).UTC()
	parent, signer := tmpl, key
	if ca != nil {
		parent, signer = ca.cert, ca.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &certKey{cert: cert, key: key, certPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		keyPEM: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))}, nil
}

// k8sSecrets renders the Kubernetes Secrets deployments/k8s refers to.
func k8sSecrets(o Options, s *Secrets, users []natsperm.User, auth, routes string, ca, srv, route *certKey, clients map[string]*certKey) (string, error) {
	type meta struct {
		Name      string            `yaml:"name"`
		Namespace string            `yaml:"namespace"`
		Labels    map[string]string `yaml:"labels,omitempty"`
	}
	type secret struct {
		APIVersion string            `yaml:"apiVersion"`
		Kind       string            `yaml:"kind"`
		Metadata   meta              `yaml:"metadata"`
		Type       string            `yaml:"type"`
		StringData map[string]string `yaml:"stringData"`
	}
	var docs []secret
	add := func(name, typ string, data map[string]string) {
		docs = append(docs, secret{APIVersion: "v1", Kind: "Secret", Metadata: meta{Name: name, Namespace: o.Namespace,
			Labels: map[string]string{"app.kubernetes.io/part-of": "archivefleet"}}, Type: typ, StringData: data})
	}
	add("nats-auth", "Opaque", map[string]string{"auth.conf": auth, "routes.conf": routes})
	add("nats-tls", "Opaque", map[string]string{"ca.crt": ca.certPEM, "server.crt": srv.certPEM, "server.key": srv.keyPEM,
		"route.crt": route.certPEM, "route.key": route.keyPEM})
	for _, u := range users {
		data := map[string]string{}
		for _, kv := range s.env(u.Name) {
			data[kv[0]] = kv[1]
		}
		add("archivefleet-"+u.Name, "Opaque", data)
		add("archivefleet-"+u.Name+"-tls", "kubernetes.io/tls", map[string]string{"ca.crt": ca.certPEM,
			"tls.crt": clients[u.Name].certPEM, "tls.key": clients[u.Name].keyPEM})
	}
	add("redis", "Opaque", map[string]string{"REDIS_PASSWORD": s.RedisPass})
	var b bytes.Buffer
	b.WriteString("# Kubernetes Secrets of an archivefleet deployment, generated by archivectl deploy-secrets:\n" +
		"# kubectl apply -f this file (before deployments/k8s/). Secret: keep it out of version control.\n")
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	for _, d := range docs {
		if err := enc.Encode(d); err != nil {
			return "", err
		}
	}
	if err := enc.Close(); err != nil {
		return "", err
	}
	return b.String(), nil
}
