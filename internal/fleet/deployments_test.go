package fleet

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// knownVariables lists every ARCHIVEFLEET_* variable a service reads, from
// the envconfig tags of the config structs.
func knownVariables() map[string]bool {
	known := map[string]bool{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if f.Anonymous {
				walk(f.Type)
				continue
			}
			if tag := f.Tag.Get("envconfig"); tag != "" {
				known[Prefix+"_"+tag] = true
			}
		}
	}
	for _, c := range []any{SchedulerConfig{}, ArchiverConfig{}, SeederConfig{}, AnnouncerConfig{}, AllInOneConfig{}} {
		walk(reflect.TypeOf(c))
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
