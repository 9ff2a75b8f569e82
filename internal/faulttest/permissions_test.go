package faulttest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/archivefleet/archivefleet/internal/announcer"
	"github.com/archivefleet/archivefleet/internal/archive"
	"github.com/archivefleet/archivefleet/internal/bus"
	"github.com/archivefleet/archivefleet/internal/deploysecrets"
	"github.com/archivefleet/archivefleet/internal/fixture"
	"github.com/archivefleet/archivefleet/internal/natsperm"
	"github.com/archivefleet/archivefleet/internal/registry"
	"github.com/archivefleet/archivefleet/internal/state"
	"github.com/archivefleet/archivefleet/internal/testenv"
)

// serverLog is a nats-server logger that keeps every line.
type serverLog struct{ testenv.Buffer }

func (l *serverLog) line(level, format string, v ...any) {
	fmt.Fprintf(&l.Buffer, "["+level+"] "+format+"\n", v...)
}
func (l *serverLog) Noticef(format string, v ...any) { l.line("INF", format, v...) }
func (l *serverLog) Warnf(format string, v ...any)   { l.line("WRN", format, v...) }
func (l *serverLog) Fatalf(format string, v ...any)  { l.line("FTL", format, v...) }
func (l *serverLog) Errorf(format string, v ...any)  { l.line("ERR", format, v...) }
func (l *serverLog) Debugf(format string, v ...any)  { l.line("DBG", format, v...) }
func (l *serverLog) Tracef(format string, v ...any)  { l.line("TRC", format, v...) }

// violations returns the server's permission refusals logged so far.
func (l *serverLog) violations() []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(l.String()))
	for sc.Scan() {
		if strings.Contains(sc.Text(), "Violation") {
			out = append(out, sc.Text())
		}
	}
	return out
}

// secretsEnv reads one of deploy-secrets' environment files.
func secretsEnv(t *testing.T, dir, user string) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, deploysecrets.EnvFile(user)))
	if err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, l := range strings.Split(string(raw), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			env = append(env, l)
		}
	}
	return env
}

func envValue(env []string, name string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}

// TestLeastPrivilege is the shipped authorization at work. It generates a
// deployment's secrets with archivectl deploy-secrets, starts nats-server
// from deployments/nats/nats.conf with the generated users (logging every
// refusal), checks that a service started before the topology exists stops
// at once saying to run archivectl setup, runs archivectl setup as the
// admin, then every service binary under its own user (the archiver with a
// Redis that wants the generated password, the Waku edge publishing with no
// peer), registers a community as the admin and ingests its messages over
// NATS as the ingest user: the windows are built, seeded, announced (the
// announcement verified as a member would, read by the admin), sent by the
// Waku edge, and archivectl probe, as the prober, fetches the magnet. The
// server refused nothing to any of them. Then each user is tried at what it
// may not do: the signing keys (only the announcer reads them), creating a
// stream, another user's inbox, the ingest user anything but ingest.
func TestLeastPrivilege(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets")
	ctl := func(env []string, args ...string) (string, error) {
		cmd := exec.Command(filepath.Join(binDir, "archivectl"), args...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// The server runs in this process, under the race detector, where a
	// check of a cost-11 hash takes 2 s (150 ms without): past the server's
	// first ping, so connections fail. The hashes here are cheap.
	if out, err := ctl(nil, "deploy-secrets", "-out", secrets, "-bcrypt-cost", "4"); err != nil {
		t.Fatalf("deploy-secrets: %v\n%s", err, out)
	}
	if out, err := ctl(nil, "deploy-secrets", "-out", secrets); err == nil || !strings.Contains(out, "-force") {
		t.Fatalf("a second deploy-secrets replaced the secrets: %v\n%s", err, out)
	}

	// The shipped single-server configuration, next to the generated
	// auth/ as in the container's /etc/nats; ports and store the test's.
	opts := testenv.ShippedNATSOptions(t, secrets)
	if len(opts.Users) != len(natsperm.Users()) {
		t.Fatalf("the server has %d users, want %d", len(opts.Users), len(natsperm.Users()))
	}
	port := testenv.FreePort(t)
	opts.Host, opts.Port, opts.HTTPHost, opts.HTTPPort = "127.0.0.1", port, "", 0
	opts.StoreDir, opts.NoSigs, opts.NoLog = filepath.Join(dir, "js"), true, false
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	slog := &serverLog{}
	ns.SetLogger(slog, false, false)
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	base := []string{"ARCHIVEFLEET_NATS_URL=" + url}
	envOf := func(user string, extra ...string) []string {
		return append(append(append([]string{}, base...), secretsEnv(t, secrets, user)...), extra...)
	}
	e := &env{t: t, dir: dir}
	t.Cleanup(func() {
		for _, p := range e.procs {
			p.kill()
		}
		if t.Failed() {
			for _, p := range e.procs {
				t.Logf("--- %s log (tail):\n%s", p.name, p.tail(30))
			}
			t.Logf("--- nats-server refusals:\n%s", strings.Join(slog.violations(), "\n"))
		}
	})

	// Before the admin's set-up: a service stops at once, saying what to do.
	early := e.start("scheduler-early", "scheduler", envOf(natsperm.Scheduler)...)
	select {
	case <-early.done:
	case <-time.After(20 * time.Second):
		t.Fatal("a scheduler without the topology and the right to create it did not stop")
	}
	if code := early.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(early.log.String(), "run `archivectl setup` with the admin credentials") {
		t.Fatalf("scheduler before setup: exit %d, log:\n%s", code, early.tail(5))
	}
	before := len(slog.violations())

	// The services' settings (env.start's ARCHIVEFLEET_ACK_WAIT) are the
	// set-up's: the consumers are made for them.
	admin := envOf(natsperm.Admin, "ARCHIVEFLEET_ACK_WAIT=3s")
	if out, err := ctl(admin, "setup"); err != nil {
		t.Fatalf("archivectl setup: %v\n%s", err, out)
	}
	redisEnv := secretsEnv(t, secrets, natsperm.Archiver)
	e.redisPort = testenv.FreePort(t)
	e.redis = execRedis(t, e.redisPort, envValue(redisEnv, "ARCHIVEFLEET_REDIS_PASSWORD"))
	defer e.stopRedis()
	btPort, trackerPort := testenv.FreePort(t), testenv.FreePort(t)
	// Besides building: the pruner (a short grace), dead letters after two
	// failures, the fleet tracker.
	archiver := e.start("archiver", "archiver", envOf(natsperm.Archiver, "ARCHIVEFLEET_REDIS_ADDR="+e.redisAddr(),
		"ARCHIVEFLEET_WORK_DIR="+filepath.Join(dir, "a"), "ARCHIVEFLEET_TRACKERS=none", "ARCHIVEFLEET_MESSAGE_PRUNE_GRACE=3s",
		"ARCHIVEFLEET_MAX_DELIVER=2", fmt.Sprintf("ARCHIVEFLEET_TRACKER_URL=http://127.0.0.1:%d/announce", trackerPort))...)
	seeder := e.start("seeder", "seeder", envOf(natsperm.Seeder, append(seederEnv(e, "s1", btPort),
		fmt.Sprintf("ARCHIVEFLEET_TRACKER_LISTEN=127.0.0.1:%d", trackerPort))...)...)
	e.start("announcer", "announcer", envOf(natsperm.Announcer)...)
	waku := e.start("waku", "waku", envOf(natsperm.Waku, "ARCHIVEFLEET_WAKU_MIN_PEERS=0", "ARCHIVEFLEET_WAKU_LISTEN=/ip4/127.0.0.1/tcp/0",
		"ARCHIVEFLEET_WAKU_KEY_FILE="+filepath.Join(dir, "waku-nodekey"))...)
	for _, p := range []*proc{seeder, waku} {
		p.waitLog(t, 30*time.Second, "nats connected")
	}

	// The admin registers a community, its key from a file.
	keyFile := filepath.Join(dir, "community.key")
	out, err := ctl(nil, "keygen", "-out", keyFile)
	if err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	var kg struct{ Community string }
	json.Unmarshal([]byte(out), &kg)
	id, err := archive.ParseCommunityID(kg.Community)
	if err != nil {
		t.Fatal(err)
	}
	now := uint64(time.Now().Unix())
	since := now - 2*3600 - 60 // two hourly windows, both closed
	if out, err := ctl(admin, "community", "add", "-private-key-file", keyFile, "-interval", "1h", "-since", fmt.Sprint(since)); err != nil {
		t.Fatalf("community add: %v\n%s", err, out)
	}

	// The ingest user sends the messages, with the token (the NATS ingest
	// takes it as HTTP's bearer token).
	ingestEnv := secretsEnv(t, secrets, natsperm.Ingest)
	in := userConn(t, url, ingestEnv, natsperm.Ingest)
	topics := []archive.Topic{registry.UniversalTopic(id)}
	msgs := fixture.Messages{N: 50, From: since, To: since + 2*3600, Topics: topics}.Make()
	// One over the store's inline size: its payload goes to the object store.
	msgs = append(msgs, fixture.Messages{N: 1, From: since + 60, Topics: topics, Size: 300 << 10}.Make()...)
	body, _ := json.Marshal(msgs)
	req := nats.NewMsg(bus.SubjectIngest(id.String()))
	req.Data = body
	req.Header.Set("Authorization", "Bearer "+envValue(ingestEnv, "ARCHIVEFLEET_INGEST_TOKEN"))
	var res struct{ Stored, Refused int }
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		reply, err := in.nc.RequestMsg(req, 10*time.Second)
		if err == nil && json.Unmarshal(reply.Data, &res) == nil && res.Stored == len(msgs) {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("ingest as the ingest user: %v %+v", err, res)
		}
	}

	// The scheduler publishes the due windows (and republishes every 4 s);
	// build, seed, announce, Waku.
	e.start("scheduler", "scheduler", envOf(natsperm.Scheduler, "ARCHIVEFLEET_REPUBLISH=4s")...)
	ac := userConn(t, url, admin, "archivectl")
	b := ac.bus(t)
	st := &state.Store{KV: b.State}
	var build *state.Build
	for end := time.Now().Add(90 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		build, _, err = st.GetBuild(ctx, id.String())
		if err == nil && build.LastEnd >= since+2*3600 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("not built: %+v %v", build, err)
		}
	}
	seeder.waitLog(t, 60*time.Second, "msg=seeding", build.InfoHash)
	ann, err := b.JS.Stream(ctx, bus.StreamAnnounced)
	if err != nil {
		t.Fatal(err)
	}
	var announced *announcer.Verified
	for end := time.Now().Add(60 * time.Second); announced == nil; time.Sleep(100 * time.Millisecond) {
		if m, err := ann.GetLastMsgForSubject(ctx, bus.SubjectAnnounced(id.String())); err == nil {
			v, err := announcer.Verify(m.Data)
			if err != nil || v.Community != id {
				t.Fatalf("announcement: %v, signed by %v", err, v)
			}
			if strings.Contains(v.Magnet, build.InfoHash) {
				announced = v
			}
		}
		if time.Now().After(end) {
			t.Fatal("no announcement of the build")
		}
	}
	for end := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if ws, _, err := st.GetWaku(ctx, id.String()); err == nil && ws.Clock >= announced.Clock {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the Waku edge did not send clock %d", announced.Clock)
		}
	}
	// The pruner removes the archived records, the large payload's object
	// included.
	archiver.waitLog(t, 60*time.Second, "archived messages pruned", "payload_objects=1")

	// Events that fail: each worker dead-letters them. A community whose
	// committed state names a missing index fails its builds (counted in
	// the worker's failure bucket); a seeding event and an announcement
	// that do not decode are refused at once.
	poisonKey := filepath.Join(dir, "poison.key")
	out, err = ctl(nil, "keygen", "-out", poisonKey)
	if err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	json.Unmarshal([]byte(out), &kg)
	poison, _ := archive.ParseCommunityID(kg.Community)
	if out, err := ctl(admin, "community", "add", "-private-key-file", poisonKey, "-interval", "1h", "-since", fmt.Sprint(now+3600)); err != nil {
		t.Fatalf("community add: %v\n%s", err, out)
	}
	if _, err := st.Put(ctx, poison.String(), &state.Build{LastEnd: now - 7200, Fence: 1, InfoHash: "00000000000000000000000000000000deadbeef"}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, bus.SubjectDue(poison.String()), "poison", bus.DueEvent{Community: poison.String(), End: now - 3600}); err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{bus.SubjectSeeding(id.String()), bus.SubjectAnnounced(id.String())} {
		if err := ac.nc.Publish(subj, []byte("{not an event")); err != nil {
			t.Fatal(err)
		}
	}
	dlq, err := b.JS.Stream(ctx, bus.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"due", "announce", "waku"} {
		for end := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if m, err := dlq.GetLastMsgForSubject(ctx, bus.SubjectDLQ(kind)); err == nil {
				var dl bus.DeadLetter
				json.Unmarshal(m.Data, &dl)
				// The build failed twice, each failure counted.
				if kind == "due" && (dl.Deliveries != 2 || !strings.Contains(dl.Reason, "index")) {
					t.Fatalf("dead letter %+v", dl)
				}
				break
			}
			if time.Now().After(end) {
				t.Fatalf("nothing dead-lettered on %s", bus.SubjectDLQ(kind))
			}
		}
	}

	probeOut, err := ctl(envOf(natsperm.Prober, "ARCHIVEFLEET_ACK_WAIT=3s"), "probe", "-once", "-dir", filepath.Join(dir, "probe"), "-metadata-timeout", "30s",
		"-timeout", "60s", "-listen", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("archivectl probe as the prober: %v\n%s", err, probeOut)
	}
	if v := slog.violations(); len(v) != before {
		t.Fatalf("the server refused the services %d operations:\n%s", len(v)-before, strings.Join(v[before:], "\n"))
	}
	t.Logf("FIGURES built to %d (%d archives), seeded, announced at clock %d, sent over Waku, pruned, dead letters from three workers, "+
		"probed, each service under its own user; no refusal", build.LastEnd, len(build.Archives), announced.Clock)

	// What each user may not do.
	keySubject := "$JS.API.DIRECT.GET.KV_" + bus.BucketCommunityKeys + ".$KV." + bus.BucketCommunityKeys + "." + id.String()
	for _, user := range []string{natsperm.Seeder, natsperm.Waku, natsperm.Scheduler, natsperm.Archiver, natsperm.Prober, natsperm.Ingest} {
		t.Run(user, func(t *testing.T) {
			c := userConn(t, url, secretsEnv(t, secrets, user), user)
			js, err := jetstream.New(c.nc)
			if err != nil {
				t.Fatal(err)
			}
			// The signing keys: the direct get (what a KV get sends) is
			// refused, so it is never answered.
			if m, err := c.nc.Request(keySubject, nil, time.Second); err == nil {
				t.Fatalf("read the signing key: %q", m.Data)
			}
			c.refused(t, keySubject)
			sub, err := c.nc.SubscribeSync("$KV." + bus.BucketCommunityKeys + ".>")
			if err == nil {
				_, err = sub.NextMsg(2 * time.Second)
			}
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Fatalf("subscribing to the keys' subjects: %v, want a permission violation", err)
			}
			// A stream (a mirror would copy the keys) is not created.
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			_, err = js.CreateStream(cctx, jetstream.StreamConfig{Name: "STOLEN", Mirror: &jetstream.StreamSource{Name: "KV_" + bus.BucketCommunityKeys}})
			cancel()
			if err == nil {
				t.Fatal("created a stream")
			}
			c.refused(t, "$JS.API.STREAM.CREATE.STOLEN")
			// Another user's inbox.
			other := natsperm.InboxPrefix(natsperm.Announcer) + ".>"
			if sub, err = c.nc.SubscribeSync(other); err == nil {
				_, err = sub.NextMsg(2 * time.Second)
			}
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Fatalf("subscribing to %s: %v, want a permission violation", other, err)
			}
			if user != natsperm.Ingest {
				return
			}
			// The ingest user reads no bucket and publishes nothing but
			// ingest requests.
			registrySubject := "$JS.API.DIRECT.GET.KV_" + bus.BucketCommunities + ".$KV." + bus.BucketCommunities + "." + id.String()
			if m, err := c.nc.Request(registrySubject, nil, time.Second); err == nil {
				t.Fatalf("the ingest user read the registry: %q", m.Data)
			}
			c.refused(t, "$JS.API.DIRECT.GET.KV_"+bus.BucketCommunities)
			if err := c.nc.Publish(bus.SubjectDue(id.String()), []byte("{}")); err != nil {
				t.Fatal(err)
			}
			c.nc.Flush()
			c.refused(t, bus.SubjectDue(id.String()))
		})
	}
	t.Run(natsperm.Announcer, func(t *testing.T) {
		c := userConn(t, url, secretsEnv(t, secrets, natsperm.Announcer), natsperm.Announcer)
		key, err := registry.NewKeys(c.bus(t).CommunityKeys).Get(ctx, id)
		if err != nil {
			t.Fatalf("the announcer reads the signing key: %v", err)
		}
		raw, _ := os.ReadFile(keyFile)
		if archive.HexBytes(key).String() != strings.TrimSpace(string(raw)) {
			t.Fatal("the announcer read another key")
		}
	})
	if n := len(slog.violations()) - before; n < 10 {
		t.Fatalf("the server logged %d refusals for the forbidden attempts", n)
	}
}

// userClient is a connection under one of the generated users, with the
// permission refusals the server sent it.
type userClient struct {
	nc      *nats.Conn
	refusal chan string
	env     []string
	url     string
}

func userConn(t *testing.T, url string, env []string, inbox string) *userClient {
	t.Helper()
	c := &userClient{refusal: make(chan string, 100), env: env, url: url}
	nc, err := nats.Connect(url, nats.UserInfo(envValue(env, "ARCHIVEFLEET_NATS_USER"), envValue(env, "ARCHIVEFLEET_NATS_PASSWORD")),
		nats.CustomInboxPrefix(natsperm.InboxPrefix(inbox)), nats.Name("test-"+inbox), nats.PermissionErrOnSubscribe(true),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				select {
				case c.refusal <- err.Error():
				default:
				}
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	c.nc = nc
	return c
}

// refused waits for the server's refusal of subject (a prefix of it).
func (c *userClient) refused(t *testing.T, subject string) {
	t.Helper()
	want := regexp.MustCompile(`Publish to "` + regexp.QuoteMeta(subject))
	for {
		select {
		case r := <-c.refusal:
			if want.MatchString(r) {
				return
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no refusal of %s", subject)
		}
	}
}

// bus is the fleet's topology on this connection, with the services'
// settings (env.start's ACK_WAIT): the admin's would otherwise update the
// consumers to its own, and the services would find them out of date.
func (c *userClient) bus(t *testing.T) *bus.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := bus.Setup(ctx, c.nc, bus.Config{AckWait: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
