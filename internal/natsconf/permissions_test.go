package natsconf

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// TestConnectWithoutTopologyRights runs Connect as a user who may read the
// topology but not create or update it, as every service's user in the
// shipped deployments: before the admin set it up, and when its settings
// differ from the admin's, Connect fails at once (no retry, no timeout) with
// bus.ErrTopologyDenied telling to run archivectl setup; once the admin
// connected with the same settings, it connects. A user who may not
// subscribe to the inbox prefix the service uses is told so at once too.
func TestConnectWithoutTopologyRights(t *testing.T) {
	reader := &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{"$JS.API.INFO", "$JS.API.STREAM.INFO.*", "$JS.API.CONSUMER.INFO.*.*"}},
		Subscribe: &server.SubjectPermission{Allow: []string{InboxPrefix("svc") + ".>"}},
	}
	ns := testenv.NATS(t, func(o *server.Options) {
		o.Users = []*server.User{{Username: "admin", Password: "a"}, {Username: "svc", Password: "s", Permissions: reader}}
	})
	connect := func(user, pass string, change func(*Common)) (*bus.Bus, error, string) {
		c := DefaultCommon()
		c.NATSURL, c.NATSUser, c.NATSPassword = ns.ClientURL(), user, pass
		if change != nil {
			change(&c)
		}
		var logs testenv.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		b, err := c.Connect(ctx, user, slog.New(slog.NewTextHandler(&logs, nil)))
		return b, err, logs.String()
	}
	refused := func(name string, change func(*Common), want ...string) {
		t.Helper()
		t0 := time.Now()
		b, err, logs := connect("svc", "s", change)
		if err == nil {
			b.NC.Close()
			t.Fatalf("%s: connected", name)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("%s: %v, want %q in it", name, err, w)
			}
		}
		if took := time.Since(t0); took > 3*time.Second {
			t.Fatalf("%s: failed after %v, want at once", name, took)
		}
		if strings.Contains(logs, "retrying") {
			t.Fatalf("%s: retried:\n%s", name, logs)
		}
		t.Logf("%s: %v (after %v)", name, err, time.Since(t0).Round(time.Millisecond))
	}
	refused("before setup", nil, "archivectl setup", "STREAM.")
	if _, err, _ := connect("svc", "s", nil); !errors.Is(err, bus.ErrTopologyDenied) {
		t.Fatalf("error %v is not ErrTopologyDenied", err)
	}

	admin, err, _ := connect("admin", "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.NC.Close()
	b, err, logs := connect("svc", "s", nil)
	if err != nil {
		t.Fatalf("after setup: %v\n%s", err, logs)
	}
	// The pruner's topology, which the archiver sets up when it starts its
	// pruner: missing (the admin connected, but did not run archivectl
	// setup), it is refused at once too, and is no transient error.
	t0 := time.Now()
	err = bus.SetupPrune(context.Background(), b)
	if !errors.Is(err, bus.ErrTopologyDenied) || bus.IsTransient(err) || time.Since(t0) > 3*time.Second {
		t.Fatalf("SetupPrune: %v after %v, want ErrTopologyDenied at once", err, time.Since(t0))
	}
	if strings.Contains(err.Error(), "nats-server 2.12") {
		t.Fatalf("SetupPrune: %v: blames the server's version", err)
	}
	b.NC.Close()

	refused("another ack wait than the admin's", func(c *Common) { c.AckWait = 45 * time.Second }, "archivectl setup", "CONSUMER.")
	refused("an inbox prefix the user may not use", func(c *Common) { c.NATSInboxPrefix = "_INBOX_other" },
		"reply inbox _INBOX_other.>", "NATS_INBOX_PREFIX")
}
