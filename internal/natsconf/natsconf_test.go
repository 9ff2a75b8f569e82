package natsconf

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestLoadAndValidate(t *testing.T) {
	t.Setenv("ARCHIVEFLEET_ACK_WAIT", "45s")
	t.Setenv("ARCHIVEFLEET_NATS_REPLICAS", "3")
	t.Setenv("MAX_DELIVER", "7") // unprefixed: not ours
	c := DefaultCommon()
	if err := Load(&c); err != nil {
		t.Fatal(err)
	}
	if c.AckWait != 45*time.Second || c.Replicas != 3 || c.MaxDeliver != DefaultMaxDeliver || c.NATSURL != DefaultNATSURL {
		t.Fatalf("%+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ARCHIVEFLEET_NATS_REPLICAS", "three")
	if err := Load(&c); err == nil || !strings.Contains(err.Error(), "ARCHIVEFLEET_NATS_REPLICAS") {
		t.Fatalf("bad int: %v", err)
	}
	c = DefaultCommon()
	c.LogLevel, c.LogFormat, c.Settle = "verbose", "xml", -time.Second
	err := c.Validate()
	for _, v := range []string{"ARCHIVEFLEET_LOG_LEVEL", "ARCHIVEFLEET_LOG_FORMAT", "ARCHIVEFLEET_SETTLE"} {
		if err == nil || !strings.Contains(err.Error(), v) {
			t.Errorf("error %v does not name %s", err, v)
		}
	}
}

func TestUsageHidesSecrets(t *testing.T) {
	c := DefaultCommon()
	c.NATSPassword = "hunter2"
	var buf bytes.Buffer
	Usage(&buf, &c)
	if out := buf.String(); strings.Contains(out, "hunter2") || !strings.Contains(out, "ARCHIVEFLEET_SETTLE") || !strings.Contains(out, "2m0s") {
		t.Fatalf("usage:\n%s", out)
	}
	if got := redact("nats://u:p@h:4222,nats://h2:4222"); got != "nats://[REDACTED]@h:4222,nats://h2:4222" {
		t.Fatalf("redact: %s", got)
	}
}

// TestLoadTagsAndErrors checks that Load reads only full ARCHIVEFLEET_*
// names (a field envconfig would read by another name is refused before
// anything is read) and that a bad value's error names the variable and
// says what was expected.
func TestLoadTagsAndErrors(t *testing.T) {
	t.Setenv("NATS_URL", "nats://elsewhere:4222")
	t.Setenv("Extra", "x")
	t.Setenv("EXTRA", "x")
	untagged := struct {
		Common
		Extra string
	}{Common: DefaultCommon()}
	if err := Load(&untagged); err == nil || !strings.Contains(err.Error(), "Extra") || untagged.Extra != "" {
		t.Fatalf("untagged field: %v, %q", err, untagged.Extra)
	}
	short := struct {
		Extra string `envconfig:"EXTRA"`
	}{}
	if err := Load(&short); err == nil || short.Extra != "" {
		t.Fatalf("unprefixed tag: %v, %q", err, short.Extra)
	}
	ok := struct {
		Common
		Extra string `envconfig:"ARCHIVEFLEET_EXTRA"`
		Skip  string `ignored:"true"`
		local string
	}{Common: DefaultCommon()}
	if err := Load(&ok); err != nil || ok.NATSURL != DefaultNATSURL || ok.Extra != "" {
		t.Fatalf("unprefixed variables read: %v, %+v", err, ok)
	}
	for _, tc := range []struct{ name, value, want string }{
		{"ARCHIVEFLEET_ACK_WAIT", "soon", `ARCHIVEFLEET_ACK_WAIT="soon": not a duration`},
		{"ARCHIVEFLEET_MAX_DELIVER", "many", `ARCHIVEFLEET_MAX_DELIVER="many": not an integer`},
		{"ARCHIVEFLEET_NATS_REPLICAS", "", `ARCHIVEFLEET_NATS_REPLICAS="": not an integer`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(tc.name, tc.value)
			c := DefaultCommon()
			if err := Load(&c); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("got %v, want %s…", err, tc.want)
			}
		})
	}
}

func TestValidateHelpers(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{NonEmpty("HTTP_ADDR", " "), `ARCHIVEFLEET_HTTP_ADDR="": empty`},
		{AtLeast("SLOTS", 0, 1), "ARCHIVEFLEET_SLOTS=0: must be at least 1"},
		{AtLeast("TICK", time.Millisecond, 10*time.Millisecond), "ARCHIVEFLEET_TICK=1ms: must be at least 10ms"},
		{NotNegative("REPUBLISH", -time.Hour), "ARCHIVEFLEET_REPUBLISH=-1h0m0s: must not be negative"},
	} {
		if tc.err == nil || tc.err.Error() != tc.want {
			t.Errorf("%v, want %s", tc.err, tc.want)
		}
	}
	if err := errors.Join(NonEmpty("X", "x"), AtLeast("X", 1, 1), NotNegative("X", 0)); err != nil {
		t.Fatalf("good values: %v", err)
	}
}
