// Package natsconf is the configuration every archivefleet process shares:
// reading ARCHIVEFLEET_* variables into a config struct (with envconfig), the
// slog logger, and the NATS connection with the fleet's topology. It imports
// only the bus, envconfig and the NATS client, so archivectl uses it without
// linking any service.
package natsconf

import (
	"context"
	"encoding"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/nats-io/nats.go"

	"github.com/archivefleet/archivefleet/internal/bus"
)

// Prefix is the environment prefix of every variable.
const Prefix = "ARCHIVEFLEET"

// Defaults of the settings every service reads.
const (
	DefaultNATSURL    = "nats://127.0.0.1:4222"
	DefaultReplicas   = 1
	DefaultRetention  = time.Duration(0) // keep messages forever
	DefaultAckWait    = 30 * time.Second
	DefaultMaxDeliver = 20
	DefaultLogLevel   = "info"
	DefaultLogFormat  = "json"
	// DefaultSettle is how long after a window closes it is built, so
	// messages delivered late still land in it.
	DefaultSettle = 2 * time.Minute
)

// Common is configuration every service reads. Its envconfig tags hold the
// full variable names (see Load) and its desc tags describe them for -h.
type Common struct {
	NATSURL      string `envconfig:"ARCHIVEFLEET_NATS_URL" desc:"NATS server URL(s), comma separated"`
	NATSUser     string `envconfig:"ARCHIVEFLEET_NATS_USER" desc:"NATS user"`
	NATSPassword string `envconfig:"ARCHIVEFLEET_NATS_PASSWORD" desc:"NATS password" secret:"true"`
	NATSToken    string `envconfig:"ARCHIVEFLEET_NATS_TOKEN" desc:"NATS token" secret:"true"`
	NATSCreds    string `envconfig:"ARCHIVEFLEET_NATS_CREDS" desc:"NATS creds file (JWT/NKey)"`
	NATSTLSCA    string `envconfig:"ARCHIVEFLEET_NATS_TLS_CA" desc:"TLS root CA file"`
	NATSTLSCert  string `envconfig:"ARCHIVEFLEET_NATS_TLS_CERT" desc:"TLS client certificate file"`
	NATSTLSKey   string `envconfig:"ARCHIVEFLEET_NATS_TLS_KEY" desc:"TLS client key file"`
	// NATSInboxPrefix is where replies to this process's requests come: by
	// default _INBOX_<service>, so the NATS permissions can give each
	// service user its own inboxes and no other's.
	NATSInboxPrefix string        `envconfig:"ARCHIVEFLEET_NATS_INBOX_PREFIX" desc:"reply inbox prefix (default: _INBOX_<service>; the NATS user must be allowed to subscribe to <prefix>.>)"`
	Replicas        int           `envconfig:"ARCHIVEFLEET_NATS_REPLICAS" desc:"stream and bucket replicas (3 on a cluster)"`
	Retention       time.Duration `envconfig:"ARCHIVEFLEET_MESSAGE_RETENTION" desc:"how long ingested messages are kept (0: forever)"`
	AckWait         time.Duration `envconfig:"ARCHIVEFLEET_ACK_WAIT" desc:"redelivery timeout between heartbeats"`
	MaxDeliver      int           `envconfig:"ARCHIVEFLEET_MAX_DELIVER" desc:"failures before an event is dead-lettered"`
	Settle          time.Duration `envconfig:"ARCHIVEFLEET_SETTLE" desc:"wait this long after a window closes before building it"`
	// HTTPAddr serves /metrics, /healthz, /readyz (and ingest on the
	// archiver and fleet).
	HTTPAddr  string `envconfig:"ARCHIVEFLEET_HTTP_ADDR" desc:"address of /metrics, /healthz, /readyz (and ingest)"`
	LogLevel  string `envconfig:"ARCHIVEFLEET_LOG_LEVEL" desc:"debug, info, warn or error"`
	LogFormat string `envconfig:"ARCHIVEFLEET_LOG_FORMAT" desc:"json or text"`
}

// DefaultCommon returns Common with every default set; services set their
// own HTTPAddr.
func DefaultCommon() Common {
	return Common{NATSURL: DefaultNATSURL, Replicas: DefaultReplicas, Retention: DefaultRetention, AckWait: DefaultAckWait,
		MaxDeliver: DefaultMaxDeliver, Settle: DefaultSettle, LogLevel: DefaultLogLevel, LogFormat: DefaultLogFormat}
}

// Validate checks the settings, naming the variable of the first bad one.
func (c Common) Validate() error {
	errs := []error{NonEmpty("NATS_URL", c.NATSURL)}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, Bad("NATS_REPLICAS", c.Replicas, "must be 1 to 5"))
	}
	errs = append(errs, NotNegative("MESSAGE_RETENTION", c.Retention), AtLeast("ACK_WAIT", c.AckWait, time.Second),
		AtLeast("MAX_DELIVER", c.MaxDeliver, 1), NotNegative("SETTLE", c.Settle))
	if p := c.NATSInboxPrefix; p != "" && !validInboxPrefix(p) {
		errs = append(errs, Bad("NATS_INBOX_PREFIX", strconv.Quote(p), "want subject tokens without wildcards or spaces (e.g. _INBOX_archiver)"))
	}
	if (c.NATSTLSCert == "") != (c.NATSTLSKey == "") {
		errs = append(errs, Bad("NATS_TLS_CERT", c.NATSTLSCert, "NATS_TLS_CERT and NATS_TLS_KEY go together"))
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, Bad("LOG_LEVEL", strconv.Quote(c.LogLevel), "want debug, info, warn or error"))
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		errs = append(errs, Bad("LOG_FORMAT", strconv.Quote(c.LogFormat), "want json or text"))
	}
	return errors.Join(errs...)
}

// Bad is the error for a variable's bad value: ARCHIVEFLEET_<name>=<v>: why.
// Every config's Validate reports with it (and the helpers below).
func Bad(name string, v any, why string) error {
	return fmt.Errorf("%s_%s=%v: %s", Prefix, name, v, why)
}

// NonEmpty is Bad for a blank v, else nil.
func NonEmpty(name, v string) error {
	if strings.TrimSpace(v) == "" {
		return Bad(name, `""`, "empty")
	}
	return nil
}

// AtLeast is Bad ("must be at least <least>") for v < least, else nil.
func AtLeast[T ~int | ~int64](name string, v, least T) error {
	if v < least {
		return Bad(name, v, fmt.Sprintf("must be at least %v", least))
	}
	return nil
}

// NotNegative is Bad for v < 0, else nil.
func NotNegative[T ~int | ~int64](name string, v T) error {
	if v < 0 {
		return Bad(name, v, "must not be negative")
	}
	return nil
}

// ParseLevel parses a slog level name (case-insensitive, e.g. "warn").
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if strings.TrimSpace(s) == "" {
		return l, errors.New("empty log level")
	}
	err := l.UnmarshalText([]byte(s))
	return l, err
}

// NewLogger returns a slog logger at the configured level and format,
// writing to stderr. Durations print as Go duration strings ("1.5s") in
// either format. Validate rejects a bad level or format at start-up; in a
// config built in code, an empty one means the default, and a bad one that
// reaches here anyway is reported by the logger instead of hidden.
func (c Common) NewLogger(service string) *slog.Logger {
	return c.NewLoggerTo(os.Stderr, service)
}

// NewLoggerTo is NewLogger writing to w.
func (c Common) NewLoggerTo(w io.Writer, service string) *slog.Logger {
	level, format := c.LogLevel, c.LogFormat
	if level == "" {
		level = DefaultLogLevel
	}
	if format == "" {
		format = DefaultLogFormat
	}
	lvl, lerr := ParseLevel(level)
	if lerr != nil {
		lvl = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lvl, ReplaceAttr: ReplaceAttr}
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if format == "text" {
		h = slog.NewTextHandler(w, opts)
	}
	log := slog.New(h).With("service", service)
	if lerr != nil || (format != "json" && format != "text") {
		log.Error("invalid log settings, using info and json", "log_level", c.LogLevel, "log_format", c.LogFormat)
	}
	return log
}

// ReplaceAttr renders time.Duration values as strings like "1.5s" (slog's
// JSON handler would write nanoseconds).
func ReplaceAttr(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

// BusConfig is the topology configuration.
func (c Common) BusConfig() bus.Config {
	return bus.Config{Replicas: c.Replicas, MessageRetention: c.Retention, AckWait: c.AckWait, MaxDeliver: c.MaxDeliver}
}

// InboxPrefix is the default reply inbox prefix of a service: _INBOX_<name>
// (the fleet's NATS permissions give each service user its own).
func InboxPrefix(name string) string { return "_INBOX_" + name }

// validInboxPrefix: subject tokens, no wildcard, no white space, not ending
// in a dot (nats.CustomInboxPrefix's rules, and the server's).
func validInboxPrefix(p string) bool {
	if p == "" || strings.HasSuffix(p, ".") || strings.HasPrefix(p, ".") || strings.Contains(p, "..") {
		return false
	}
	return !strings.ContainsAny(p, "*> \t\r\n")
}

// Connect dials NATS with the configured credentials and sets up the topology.
// name is the service's: the connection's name and its inbox prefix
// (InboxPrefix) come from it. Secrets are never logged.
//
// A user without the right to create streams (every service's in the
// shipped deployments) only reads the topology: if it is missing or out of
// date, Connect fails at once with bus.ErrTopologyDenied, which says to run
// archivectl setup as the admin. Operations the server refuses later are
// logged with their subject.
func (c Common) Connect(ctx context.Context, name string, log *slog.Logger, extra ...nats.Option) (*bus.Bus, error) {
	inbox := c.NATSInboxPrefix
	if inbox == "" {
		inbox = InboxPrefix(name)
	}
	if !validInboxPrefix(inbox) {
		return nil, fmt.Errorf("nats: inbox prefix %q: want subject tokens without wildcards or spaces", inbox)
	}
	denials := bus.NewDenials()
	// Replies to every request come to the inbox: a user who may not
	// subscribe there gets no answer at all, which Connect reports at once
	// rather than as a server that does not answer.
	inboxDenied, inboxOnce := make(chan struct{}), sync.Once{}
	opts := []nats.Option{
		nats.Name("archivefleet-" + name),
		nats.CustomInboxPrefix(inbox),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			var subject string
			if sub != nil {
				subject = sub.Subject
			}
			if denials.Note(err) {
				if strings.Contains(err.Error(), `Subscription to "`+inbox+".") {
					inboxOnce.Do(func() { close(inboxDenied) })
				}
				log.Error("nats refused an operation to this user (see the NATS user's permissions, or run the service with its own user)",
					"err", err, "inbox_prefix", inbox)
				return
			}
			log.Warn("nats error", "err", err, "subscription", subject)
		}),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		// The server checks a bcrypt password hash on every connect: on a
		// busy server, with a whole fleet (re)connecting at once, that
		// takes longer than nats.go's 2 s.
		nats.Timeout(ConnectTimeout),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil on a deliberate close or drain
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted()) }),
	}
	switch {
	case c.NATSCreds != "":
		opts = append(opts, nats.UserCredentials(c.NATSCreds))
	case c.NATSToken != "":
		opts = append(opts, nats.Token(c.NATSToken))
	case c.NATSUser != "":
		opts = append(opts, nats.UserInfo(c.NATSUser, c.NATSPassword))
	}
	if c.NATSTLSCA != "" {
		opts = append(opts, nats.RootCAs(c.NATSTLSCA))
	}
	if c.NATSTLSCert != "" {
		opts = append(opts, nats.ClientCert(c.NATSTLSCert, c.NATSTLSKey))
	}
	opts = append(opts, extra...)
	nc, err := nats.Connect(c.NATSURL, opts...)
	if err != nil {
		return nil, fmt.Errorf("nats connect %s: %w", redact(c.NATSURL), err)
	}
	cfg := c.BusConfig()
	cfg.Denials = denials
	sctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case <-inboxDenied:
			cancel(fmt.Errorf("nats: this user may not subscribe to its reply inbox %s.> (no request can be answered): "+
				"run the service with its own NATS user, or set %s_NATS_INBOX_PREFIX to the prefix the user's permissions allow", inbox, Prefix))
		case <-sctx.Done():
		}
	}()
	b, err := setup(sctx, nc, cfg, log)
	cause := context.Cause(sctx)
	cancel(nil)
	if err != nil {
		nc.Close()
		if cause != nil && ctx.Err() == nil {
			return nil, cause
		}
		return nil, fmt.Errorf("nats topology: %w", err)
	}
	log.Info("nats connected", "url", nc.ConnectedUrlRedacted())
	return b, nil
}

// ConnectTimeout bounds the dial and handshake of each connection attempt.
const ConnectTimeout = 10 * time.Second

// SetupRetry bounds how long Connect repeats bus.Setup over a cluster's
// transient errors: a service starting while the cluster elects a meta
// or stream leader (a node restarting, a rolling upgrade) waits for it
// rather than exiting. Elections take well under the 30 s budget; a
// cluster still failing after it is down, and the service exits. Each
// attempt is bounded (5 s) so that a request lost with a node is repeated
// even when ctx has a deadline (the client's own 5 s per request applies
// only without one); an attempt cut short loses nothing, since the next
// one finds what it created in place.
var SetupRetry = bus.RetryPolicy{First: 250 * time.Millisecond, Max: 5 * time.Second, Budget: 30 * time.Second, Attempt: 5 * time.Second}

// setup runs bus.Setup under SetupRetry, logging each transient failure.
// Setup creates or updates every stream, consumer and bucket to one
// configuration, so running it again after a failure (or after an attempt
// that did its work but whose reply was lost) changes nothing more.
func setup(ctx context.Context, nc *nats.Conn, cfg bus.Config, log *slog.Logger) (*bus.Bus, error) {
	start := time.Now()
	attempt := 0
	var b *bus.Bus
	err := SetupRetry.Do(ctx, func(actx context.Context) error {
		attempt++
		var err error
		b, err = bus.Setup(actx, nc, cfg)
		if bus.IsTransient(err) && ctx.Err() == nil { // an attempt's own timeout included
			log.Warn("nats topology set-up failed on a transient error (cluster electing a leader?); retrying",
				"attempt", attempt, "elapsed", time.Since(start).Round(time.Millisecond), "gives_up_after", SetupRetry.Budget, "err", err)
		}
		return err
	})
	if err != nil {
		if attempt > 1 {
			return nil, fmt.Errorf("after %d attempts in %v: %w", attempt, time.Since(start).Round(time.Millisecond), err)
		}
		return nil, err
	}
	if attempt > 1 {
		log.Info("nats topology set up after transient errors", "attempts", attempt, "took", time.Since(start).Round(time.Millisecond))
	}
	return b, nil
}

// redact drops user info from URLs.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if at := strings.LastIndex(p, "@"); at >= 0 {
			if s := strings.Index(p, "://"); s >= 0 && s < at {
				parts[i] = p[:s+3] + "[REDACTED]" + p[at:]
			}
		}
	}
	return strings.Join(parts, ",")
}

// Load sets the fields of the struct cfg points to from the ARCHIVEFLEET_*
// variables that are set, with envconfig; fields whose variable is unset keep
// their value (the defaults the caller filled in: no field has a default
// tag). Embedded structs are walked. Only the prefixed names are read: each
// envconfig tag is the full variable name and the envconfig prefix is empty,
// so envconfig's fallback to the tag alone (its Alt key, meant for the name
// without the prefix) is the same name. Walk checks the tags first, so a field
// envconfig would read by another name is an error, not a silent fallback.
func Load(cfg any) error {
	if err := Walk(cfg, func(Var) error { return nil }); err != nil {
		return err
	}
	err := envconfig.Process("", cfg)
	var pe *envconfig.ParseError
	if !errors.As(err, &pe) {
		return err
	}
	why := pe.Err
	switch {
	case pe.TypeName == "time.Duration":
		why = errors.New("not a duration (e.g. 30s, 5m, 24h)")
	case pe.TypeName == "bool":
		why = errors.New("not a boolean (true or false)")
	case strings.HasPrefix(pe.TypeName, "int"):
		why = errors.New("not an integer")
	}
	return fmt.Errorf("%s=%q: %w", pe.KeyName, pe.Value, why)
}

// Var is one variable of a config struct.
type Var struct {
	Name   string // with the prefix
	Desc   string
	Secret bool
	Field  reflect.Value
}

// Walk calls fn for every variable envconfig reads into the struct cfg
// points to, embedded structs included. It fails on a field envconfig would
// read by a name that does not start with the prefix: every exported field
// needs an envconfig tag holding its full variable name (ARCHIVEFLEET_…) or
// an ignored:"true" tag.
func Walk(cfg any, fn func(Var) error) error {
	v := reflect.ValueOf(cfg)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("natsconf: %T is not a pointer to a struct", cfg)
	}
	return walk(v.Elem(), fn)
}

func walk(v reflect.Value, fn func(Var) error) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if ignored, _ := strconv.ParseBool(f.Tag.Get("ignored")); ignored || !f.IsExported() {
			continue // envconfig skips these too
		}
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			if err := walk(v.Field(i), fn); err != nil {
				return err
			}
			continue
		}
		name := f.Tag.Get("envconfig")
		if !strings.HasPrefix(name, Prefix+"_") || name != strings.ToUpper(name) {
			return fmt.Errorf("natsconf: %s.%s: envconfig tag %q is not a full variable name %s_…", t, f.Name, name, Prefix)
		}
		if k := f.Type.Kind(); (k == reflect.Struct || k == reflect.Pointer) && !reflect.PointerTo(f.Type).Implements(textUnmarshaler) {
			return fmt.Errorf("natsconf: %s.%s: a %s field needs UnmarshalText", t, f.Name, f.Type)
		}
		if err := fn(Var{Name: name, Desc: f.Tag.Get("desc"), Secret: f.Tag.Get("secret") == "true",
			Field: v.Field(i)}); err != nil {
			return err
		}
	}
	return nil
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// UsageDefaults is implemented by configs that show a default other than
// the value they hold (e.g. "auto"), keyed by variable name.
type UsageDefaults interface{ UsageDefaults() map[string]string }

// Usage writes the variables cfg reads with the values it holds (its
// defaults, when given the defaults), for -h.
func Usage(w io.Writer, cfg any) {
	var special map[string]string
	if u, ok := cfg.(UsageDefaults); ok {
		special = u.UsageDefaults()
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tDEFAULT\tMEANING")
	Walk(cfg, func(v Var) error {
		def := fmt.Sprint(v.Field.Interface())
		switch {
		case special[v.Name] != "":
			def = special[v.Name]
		case v.Field.Kind() == reflect.String && v.Field.IsZero():
			def = "-"
		case v.Secret && !v.Field.IsZero():
			def = "(set)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", v.Name, def, v.Desc)
		return nil
	})
	tw.Flush()
}
