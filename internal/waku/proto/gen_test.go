package proto

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
)

// root is the repository, where gen.go's output paths start.
const root = "../../.."

// protocVersion is the line protoc-gen-go writes the protoc version in.
var protocVersion = regexp.MustCompile(`(?m)^// \tprotoc +v.*\n`)

// TestGenerated runs gen.go's go:generate lines (go generate, with
// WAKU_PROTO_OUT set to a temporary directory) and compares what they
// write with the committed files, which must be exactly those: the .proto
// files, the generator and the generated code agree. Only the line naming
// protoc's version may differ (it is logged): the committed code was made
// with Debian's protobuf-compiler, which scripts/test installs.
func TestGenerated(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		t.Skip("protoc is not installed, so the generated code is not checked (Debian: apt-get install protobuf-compiler; scripts/test installs it)")
	}
	out := t.TempDir()
	cmd := exec.Command("go", "generate", "gen.go")
	cmd.Env = append(os.Environ(), "WAKU_PROTO_OUT="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go generate: %v\n%s", err, b)
	}
	generated := files(t, out)
	committed := files(t, filepath.Join(root, "internal", "waku"))
	for i := range committed {
		committed[i] = filepath.Join("internal", "waku", committed[i])
	}
	if !slices.Equal(generated, committed) {
		t.Fatalf("go generate writes %q; committed are %q", generated, committed)
	}
	for _, name := range generated {
		want, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(got, want) {
			continue
		}
		if v, w := protocVersion.Find(got), protocVersion.Find(want); !bytes.Equal(v, w) &&
			bytes.Equal(protocVersion.ReplaceAll(got, nil), protocVersion.ReplaceAll(want, nil)) {
			t.Logf("%s: the same but for the protoc version (%q here, %q committed)", name, bytes.TrimSpace(v), bytes.TrimSpace(w))
			continue
		}
		t.Errorf("%s differs from what go generate writes: run `go generate ./internal/waku/proto` and commit the result", name)
	}
}

// files lists the .pb.go files under dir, relative to it, sorted.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && filepath.Ext(path) == ".go" && filepath.Ext(path[:len(path)-3]) == ".pb" {
			rel, err := filepath.Rel(dir, path)
			if err != nil {
				return err
			}
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}
