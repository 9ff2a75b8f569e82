package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// TestSetupCommand runs archivectl setup as an admin would on a server
// where an earlier version registered communities with their keys in the
// registry: it sets the topology up, the pruner's included (with the
// archivers' MESSAGE_PRUNE_GRACE, or not at all with 0), and moves the keys
// to the keys bucket; `community add -update` of such an entry moves its
// key too.
func TestSetupCommand(t *testing.T) {
	ns := testenv.NATS(t)
	url := ns.ClientURL()
	b := testenv.Bus(t, ns, bus.Config{})
	ctx := context.Background()
	legacy := func() ([]byte, *registry.Community) {
		key := fixture.Key()
		com := fixture.CommunityFromKey(key, time.Hour, 1)
		com.LegacySigningKey = key
		raw, _ := json.Marshal(com)
		if _, err := b.Communities.Put(ctx, com.ID.String(), raw); err != nil {
			t.Fatal(err)
		}
		return key, com
	}
	keys := registry.NewKeys(b.CommunityKeys)
	key1, com1 := legacy()
	key2, com2 := legacy()

	// An update moves that community's key (and keeps the rest).
	mustRun(t, "", "community", "add", "-update", "-nats", url, "-id", com2.ID.String(), "-interval", "2h")
	if got, err := keys.Get(ctx, com2.ID); err != nil || !bytes.Equal(got, key2) {
		t.Fatalf("key after update: %x %v", got, err)
	}
	if com, err := registry.New(b.Communities).Get(ctx, com2.ID); err != nil || len(com.LegacySigningKey) != 0 || time.Duration(com.Interval) != 2*time.Hour {
		t.Fatalf("entry after update: %+v %v", com, err)
	}

	t.Setenv("ARCHIVEFLEET_MESSAGE_PRUNE_GRACE", "0")
	out := mustRun(t, "", "setup", "-nats", url)
	if !strings.Contains(out, "not set up") || !strings.Contains(out, "moved the signing keys of 1 communities") || !strings.Contains(out, com1.ID.String()) {
		t.Fatalf("setup: %s", out)
	}
	if _, err := b.JS.Stream(ctx, bus.StreamPrune); err == nil {
		t.Fatal("MESSAGE_PRUNE_GRACE=0 set the pruner's stream up")
	}
	if got, err := keys.Get(ctx, com1.ID); err != nil || !bytes.Equal(got, key1) {
		t.Fatalf("key after setup: %x %v", got, err)
	}
	t.Setenv("ARCHIVEFLEET_MESSAGE_PRUNE_GRACE", "48h")
	out = mustRun(t, "", "setup", "-nats", url)
	if !strings.Contains(out, "pruner's stream "+bus.StreamPrune) || !strings.Contains(out, "no signing key left") {
		t.Fatalf("second setup: %s", out)
	}
	if _, err := b.JS.Consumer(ctx, bus.StreamPrune, bus.ConsumerPruner); err != nil {
		t.Fatalf("pruner's consumer: %v", err)
	}
}
