package ctl

import (
	"context"
	"fmt"
	"strings"

	"github.com/archivefleet/archivefleet/internal/deploysecrets"
	"github.com/archivefleet/archivefleet/internal/natsperm"
)

// runDeploySecrets writes a deployment's secrets (see deploysecrets) and
// says what to do with them. Nothing secret is printed.
func runDeploySecrets(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "deploy-secrets", "-out DIR [-force] [-namespace NS]")
	out := fs.String("out", "", "folder to write into (e.g. deployments/secrets, which Compose reads; keep it out of version control)")
	force := fs.Bool("force", false, "replace the secrets of an earlier run (every service, NATS and Redis then need the new ones)")
	ns := fs.String("namespace", "archivefleet", "Kubernetes namespace of the Secrets and of the NATS service names in the certificates")
	cost := fs.Int("bcrypt-cost", deploysecrets.DefaultBcryptCost, "bcrypt cost of the NATS password hashes (the server checks one per connect)")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *out == "" {
		fmt.Fprintln(env.Stderr, "archivectl deploy-secrets: give -out DIR")
		fs.Usage()
		return errUsage
	}
	s, err := deploysecrets.Generate(deploysecrets.Options{Dir: *out, Force: *force, Namespace: *ns, BcryptCost: *cost})
	if err != nil {
		return err
	}
	var users []string
	for _, u := range natsperm.Users() {
		users = append(users, u.Name)
	}
	fmt.Fprintf(env.Stdout, "wrote %d files to %s (secrets 0600, certificates 0644):\n", len(s.Files), *out)
	fmt.Fprintf(env.Stdout, "  %s: the NATS users %s with bcrypt hashes and their permissions (include it in the server's configuration)\n",
		deploysecrets.AuthConf, strings.Join(users, ", "))
	fmt.Fprintf(env.Stdout, "  %s: the cluster's route user and routes\n", deploysecrets.RoutesConf)
	fmt.Fprintf(env.Stdout, "  env/<user>.env: each user's ARCHIVEFLEET_NATS_USER and _PASSWORD (the archiver's with the Redis password and the ingest token), %s\n",
		deploysecrets.RedisEnv)
	fmt.Fprintf(env.Stdout, "  nats/tls/, tls/, ca/: a CA (its key in %s), the server's, the routes' and a client certificate per user\n", deploysecrets.CAKey)
	fmt.Fprintf(env.Stdout, "  %s: all of it as Kubernetes Secrets in namespace %s\n", deploysecrets.K8sSecrets, *ns)
	fmt.Fprintln(env.Stdout, "next: docker compose -p archivefleet -f deployments/compose.yaml up --build (with -out deployments/secrets, or SECRETS_DIR=<dir>),")
	fmt.Fprintf(env.Stdout, "or kubectl apply -f %s and then -f deployments/k8s/\n", strings.TrimSuffix(*out, "/")+"/"+deploysecrets.K8sSecrets)
	return nil
}
