package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/archivefleet/archivefleet/internal/natsconf"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// mainCase runs mainCode for one service with a run function that records
// the configuration it was given instead of running.
func mainCase[T Config](t *testing.T, name string, defaults func() T, args []string) (code int, stderr string, ran *T) {
	t.Helper()
	var buf bytes.Buffer
	code = mainCode(context.Background(), name, "About.", args, &buf, defaults, func(_ context.Context, cfg T) error {
		ran = &cfg
		return nil
	})
	return code, buf.String(), ran
}

// mainSvc runs one service command's mainCase, reporting only whether it ran.
type mainSvc struct {
	name string
	run  func(t *testing.T, args []string) (int, string, bool)
}

func mainRun[T Config](name string, defaults func() T) mainSvc {
	return mainSvc{name, func(t *testing.T, args []string) (int, string, bool) {
		c, s, r := mainCase(t, name, defaults, args)
		return c, s, r != nil
	}}
}

// TestMainFlagsAndConfig checks every service command: -h lists the
// variables with defaults (exit 0) and runs nothing; unknown flags and
// arguments exit 2; a bad setting exits 2 naming its variable; a good
// environment reaches the service.
func TestMainFlagsAndConfig(t *testing.T) {
	services := []mainSvc{
		mainRun("scheduler", DefaultSchedulerConfig),
		mainRun("archiver", DefaultArchiverConfig),
		mainRun("seeder", DefaultSeederConfig),
		mainRun("announcer", DefaultAnnouncerConfig),
		mainRun("waku", DefaultWakuConfig),
		mainRun("fleet", DefaultAllInOneConfig),
		mainRun("console", DefaultConsoleConfig),
	}
	cases := []struct {
		name string
		args []string
		env  map[string]string
		code int
		want string
		ran  bool
	}{
		{"help", []string{"-h"}, nil, 0, "ARCHIVEFLEET_LOG_LEVEL", false},
		{"help long", []string{"--help"}, nil, 0, "ARCHIVEFLEET_NATS_URL", false},
		{"unknown flag", []string{"-verbose"}, nil, 2, "flag provided but not defined: -verbose", false},
		{"argument", []string{"run"}, nil, 2, `unexpected argument "run"`, false},
		{"bad log level", nil, map[string]string{"ARCHIVEFLEET_LOG_LEVEL": "loud"}, 2, "ARCHIVEFLEET_LOG_LEVEL", false},
		{"bad log format", nil, map[string]string{"ARCHIVEFLEET_LOG_FORMAT": "yaml"}, 2, "ARCHIVEFLEET_LOG_FORMAT", false},
		{"bad duration", nil, map[string]string{"ARCHIVEFLEET_ACK_WAIT": "soon"}, 2, "ARCHIVEFLEET_ACK_WAIT", false},
		{"negative settle", nil, map[string]string{"ARCHIVEFLEET_SETTLE": "-5s"}, 2, "ARCHIVEFLEET_SETTLE", false},
		{"unprefixed ignored", nil, map[string]string{"LOG_LEVEL": "loud", "ARCHIVEFLEET_LOG_FORMAT": "text"}, 0, "", true},
	}
	for _, s := range services {
		for _, tc := range cases {
			t.Run(s.name+"/"+tc.name, func(t *testing.T) {
				for k, v := range tc.env {
					t.Setenv(k, v)
				}
				code, stderr, ran := s.run(t, tc.args)
				if code != tc.code || !strings.Contains(stderr, tc.want) || ran != tc.ran {
					t.Fatalf("exit %d (want %d), ran %v (want %v), stderr:\n%s\nwant %q", code, tc.code, ran, tc.ran, stderr, tc.want)
				}
			})
		}
	}
}

// TestDefaults checks every service's defaults are valid, come from the
// named constants, and that the environment overrides them.
func TestDefaults(t *testing.T) {
	for name, cfg := range map[string]Config{"scheduler": DefaultSchedulerConfig(), "archiver": DefaultArchiverConfig(),
		"seeder": DefaultSeederConfig(), "announcer": DefaultAnnouncerConfig(), "waku": DefaultWakuConfig(), "fleet": DefaultAllInOneConfig(),
		"console": DefaultConsoleConfig()} {
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s defaults: %v", name, err)
		}
	}
	a := DefaultArchiverConfig()
	if a.Settle != natsconf.DefaultSettle || a.HTTPAddr != DefaultArchiverHTTP || a.Slots != DefaultSlots || a.Addr != DefaultRedisAddr {
		t.Fatalf("archiver defaults: %+v", a)
	}
	if w := DefaultWakuConfig(); w.MinPeers != 1 || w.Cluster != 16 || w.Shards != "32" || DefaultAllInOneConfig().Waku.MinPeers != 0 {
		t.Fatalf("waku defaults: service %+v, all-in-one %+v", w.Waku, DefaultAllInOneConfig().Waku)
	}
	if err := DefaultWaku().Validate(); err != nil {
		t.Fatalf("waku defaults invalid: %v", err)
	}
	key := strings.Repeat("ab", 32)
	ok := func(w *Waku) {
		w.ShardKeys, w.LightPushNodes, w.DNSDiscovery = "32="+key, "/ip4/127.0.0.1/tcp/1/p2p/16Uiu2HAmGMKQTgpM9cRgLJP8hFCS2v47iK9V9mvum7LKA5wvX13i", StatusProdENRTree
	}
	for name, edit := range map[string]func(*Waku){
		"bad listen":              func(w *Waku) { w.Listen = "x" },
		"shard out of range":      func(w *Waku) { w.Shards = "1024" },
		"shard twice":             func(w *Waku) { w.Shards = "32,32" },
		"static peer without id":  func(w *Waku) { w.StaticPeers = "/ip4/127.0.0.1/tcp/1" },
		"negative min peers":      func(w *Waku) { w.MinPeers = -1 },
		"no max peers":            func(w *Waku) { w.MaxPeers = 0 },
		"no store retention":      func(w *Waku) { w.StoreRetention = 0 },
		"no store capacity":       func(w *Waku) { w.StoreCapacity = 0 },
		"store budget too small":  func(w *Waku) { w.StoreMaxBytes = MinWakuStoreMaxBytes - 1 },
		"lightpush node no id":    func(w *Waku) { ok(w); w.LightPushNodes = "/ip4/127.0.0.1/tcp/1" },
		"shard key not relayed":   func(w *Waku) { ok(w); w.ShardKeys = "64=" + key },
		"shard key short":         func(w *Waku) { ok(w); w.ShardKeys = "32=abcd" },
		"shard key without shard": func(w *Waku) { ok(w); w.ShardKeys = key },
		"not an enrtree":          func(w *Waku) { ok(w); w.DNSDiscovery = "https://boot.prod.status.nodes.status.im" },
	} {
		w := DefaultWaku()
		edit(&w)
		err := w.Validate()
		if err == nil {
			t.Errorf("%s: waku settings %+v accepted", name, w)
		} else if strings.Contains(err.Error(), key) {
			t.Errorf("%s: the error shows the shard key: %v", name, err)
		}
	}
	w := DefaultWaku()
	ok(&w)
	if err := w.Validate(); err != nil {
		t.Fatalf("full waku settings: %v", err)
	}
	t.Setenv("ARCHIVEFLEET_SETTLE", "45s")
	t.Setenv("ARCHIVEFLEET_EMBEDDED_NATS_MAX_PAYLOAD", "16MiB")
	t.Setenv("ARCHIVEFLEET_WAKU_STORE_MAX_BYTES", "32MiB")
	f := DefaultAllInOneConfig()
	if f.Waku.StoreMaxBytes != 256<<20 || f.Waku.StoreCapacity != 1_000_000 || f.Waku.StoreRetention != 30*24*time.Hour {
		t.Fatalf("store service defaults: %v, %d, %v", f.Waku.StoreMaxBytes, f.Waku.StoreCapacity, f.Waku.StoreRetention)
	}
	if f.NATSPort != 4222 || f.settle() != 4*time.Second {
		t.Fatalf("all-in-one: port %d, settle %v (want 4222, 20s/5)", f.NATSPort, f.settle())
	}
	f.Demo = false
	if f.settle() != DefaultFleetSettle {
		t.Fatalf("all-in-one without the demo: settle %v", f.settle())
	}
	if err := natsconf.Load(&f); err != nil {
		t.Fatal(err)
	}
	if f.settle() != 45*time.Second || f.MaxPayload != 16<<20 || f.Waku.StoreMaxBytes != 32<<20 {
		t.Fatalf("environment not applied: settle %v, max payload %v, store budget %v", f.settle(), f.MaxPayload, f.Waku.StoreMaxBytes)
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"8388608": 8 << 20, "8MiB": 8 << 20, "8mb": 8_000_000, "512K": 512 << 10, " 2 GiB ": 2 << 30, "100B": 100} {
		var b ByteSize
		if err := b.UnmarshalText([]byte(in)); err != nil || b != want {
			t.Errorf("%q: %v %v, want %v", in, b, err, want)
		}
	}
	for _, in := range []string{"", "8XB", "-1", "MiB", "1.5MiB"} {
		var b ByteSize
		if err := b.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("%q accepted as %v", in, b)
		}
	}
	t.Setenv("ARCHIVEFLEET_EMBEDDED_NATS_MAX_PAYLOAD", "8XB")
	c := DefaultAllInOneConfig()
	if err := natsconf.Load(&c); err == nil || !strings.Contains(err.Error(), `ARCHIVEFLEET_EMBEDDED_NATS_MAX_PAYLOAD="8XB": not a size`) {
		t.Fatalf("8XB from the environment: %v", err)
	}
	c.MaxPayload = 65 << 20
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "ARCHIVEFLEET_EMBEDDED_NATS_MAX_PAYLOAD") {
		t.Fatalf("65MiB: %v", err)
	}
}

// TestLogDurations checks durations log as "1.5s" in both formats.
func TestLogDurations(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		c := natsconf.DefaultCommon()
		c.LogFormat = format
		var buf bytes.Buffer
		c.NewLoggerTo(&buf, "test").Info("x", "took", 1500*time.Millisecond, "ttl", registry.Duration(time.Minute))
		out := buf.String()
		if !strings.Contains(out, "1.5s") || strings.Contains(out, "1500000000") {
			t.Errorf("%s: %s", format, out)
		}
		if format == "json" {
			var m map[string]any
			if err := json.Unmarshal(buf.Bytes(), &m); err != nil || m["took"] != "1.5s" {
				t.Errorf("json: %v %v", m, err)
			}
		}
	}
}

// TestEmbeddedNATS checks the max payload reaches the embedded server and a
// taken port fails at once with an error naming the variable to change.
func TestEmbeddedNATS(t *testing.T) {
	s, err := StartEmbedded(EmbeddedOptions{Dir: t.TempDir(), Port: -1, MaxPayload: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer StopNATS(context.Background(), s)
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if nc.MaxPayload() != 8<<20 {
		t.Fatalf("max payload %d", nc.MaxPayload())
	}
	if err := nc.Publish("x", make([]byte, 5<<20)); err != nil {
		t.Fatalf("5 MiB message: %v", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := DefaultAllInOneConfig()
	cfg.DataDir, cfg.NATSPort, cfg.HTTPAddr, cfg.Demo = t.TempDir(), ln.Addr().(*net.TCPAddr).Port, "127.0.0.1:0", false
	t0 := time.Now()
	err = RunAllInOne(context.Background(), cfg)
	if !errors.Is(err, ErrPortInUse) || !strings.Contains(err.Error(), "ARCHIVEFLEET_EMBEDDED_NATS_PORT") || time.Since(t0) > 5*time.Second {
		t.Fatalf("taken port: %v after %v", err, time.Since(t0))
	}
}

// TestAllInOneRestart runs the all-in-one with its demo twice on one data
// dir: the second start reuses the demo community (same key, same start)
// instead of registering another, and every service logs that it is
// stopping and stopped.
func TestAllInOneRestart(t *testing.T) {
	dir := t.TempDir()
	run := func() (*registry.Community, string) {
		cfg := DefaultAllInOneConfig()
		cfg.DataDir, cfg.NATSPort, cfg.HTTPAddr, cfg.DemoEvery, cfg.LogFormat = dir, -1, "127.0.0.1:0", 2*time.Second, "text"
		logs := &testenv.Buffer{}
		cfg.logOut = logs
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- RunAllInOne(ctx, cfg) }()
		for end := time.Now().Add(30 * time.Second); !strings.Contains(logs.String(), "demo messages ingested"); {
			if time.Now().After(end) {
				cancel()
				t.Fatalf("demo did not start:\n%s", logs)
			}
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("fleet: %v\n%s", err, logs)
		}
		// Read the registry from the fleet's own NATS store.
		s, err := StartEmbedded(EmbeddedOptions{Dir: filepath.Join(dir, "nats"), Port: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer StopNATS(context.Background(), s)
		c := natsconf.DefaultCommon()
		c.NATSURL = s.ClientURL()
		b, err := c.Connect(context.Background(), "test", testenv.Logger())
		if err != nil {
			t.Fatal(err)
		}
		defer b.NC.Close()
		coms, err := registry.New(b.Communities).List(context.Background())
		if err != nil || len(coms) != 1 {
			t.Fatalf("%d communities registered (%v), want 1", len(coms), err)
		}
		return coms[0], logs.String()
	}
	first, logs1 := run()
	for _, svc := range []string{"fleet", "archiver", "seeder", "announcer", "scheduler", "waku", "demo"} {
		for _, msg := range []string{"msg=stopping service=" + svc, "msg=stopped service=" + svc} {
			if !strings.Contains(logs1, msg) {
				t.Errorf("log lacks %q", msg)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, DemoKeyFile)); err != nil {
		t.Fatal(err)
	}
	second, logs2 := run()
	if second.ID != first.ID || second.Since != first.Since {
		t.Fatalf("restart registered %s since %d, want %s since %d", second.ID, second.Since, first.ID, first.Since)
	}
	if !strings.Contains(logs2, "demo community reused") {
		t.Fatalf("second start did not say it reused the community:\n%s", logs2)
	}
	// The Waku edge logs where a local node can reach it, with the same
	// peer id after a restart (its key is kept in DATA_DIR).
	peerID := regexp.MustCompile(`waku edge listening.*?/ip4/127\.0\.0\.1/tcp/\d+/p2p/(\w+)`)
	m1, m2 := peerID.FindStringSubmatch(logs1), peerID.FindStringSubmatch(logs2)
	if m1 == nil || m2 == nil || m1[1] != m2[1] {
		t.Fatalf("waku listen addresses: first %v, second %v", m1, m2)
	}
}

// TestIngestNeedsIdentity: ingest reachable from other hosts needs a token.
func TestIngestNeedsIdentity(t *testing.T) {
	for _, tc := range []struct {
		addr, token string
		ok          bool
	}{
		{"127.0.0.1:9102", "", true},
		{"[::1]:9102", "", true},
		{"localhost:9102", "", true},
		{"0.0.0.0:9100", "", false},
		{":9100", "", false},
		{"10.1.2.3:9100", "", false},
		{"0.0.0.0:9100", "s3cret", true},
	} {
		a := DefaultArchiverConfig()
		a.HTTPAddr, a.IngestToken = tc.addr, tc.token
		f := DefaultAllInOneConfig()
		f.HTTPAddr, f.IngestToken = tc.addr, tc.token
		for name, err := range map[string]error{"archiver": a.Validate(), "fleet": f.Validate()} {
			if (err == nil) != tc.ok || err != nil && !strings.Contains(err.Error(), "INGEST_TOKEN") {
				t.Errorf("%s at %s, token %q: %v", name, tc.addr, tc.token, err)
			}
		}
	}
}

// TestFleetHelpShowsRealDefaults: the all-in-one's -h shows what it uses
// when a variable is unset, not "-": its Waku key in DATA_DIR, its tracker
// on loopback, the automatic settle.
func TestFleetHelpShowsRealDefaults(t *testing.T) {
	code, stderr, _ := mainCase(t, "fleet", DefaultAllInOneConfig, []string{"-h"})
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, tc := range []struct{ variable, def string }{
		{"ARCHIVEFLEET_WAKU_KEY_FILE", "DATA_DIR/" + DefaultFleetWakuKeyFile},
		{"ARCHIVEFLEET_TRACKER_LISTEN", DefaultFleetTrackerListen},
		{"ARCHIVEFLEET_TRACKERS", DefaultTrackers},
		{"ARCHIVEFLEET_TRACKER_URL", "http://<TRACKER_LISTEN's"},
		{"ARCHIVEFLEET_SETTLE", "auto:"},
	} {
		var line string
		for _, l := range strings.Split(stderr, "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == tc.variable {
				line = l
			}
		}
		if f := strings.Fields(line); len(f) < 2 || !strings.HasPrefix(f[1], tc.def) {
			t.Errorf("-h shows %s as %q, want default %s", tc.variable, line, tc.def)
		}
	}
}
