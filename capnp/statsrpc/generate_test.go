package statsrpc

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// generated maps each schema in schema/ to the package generated from it,
// as the Makefile's generate target does.
var generated = map[string]string{
	"stats.capnp": "capnp/statsrpc",
	"tub.capnp":   "capnp/tubrpc",
}

// TestGeneratedCodeIsCurrent regenerates the Go code from every schema in
// schema/ with the capnp compiler and the pinned capnpc-go, and compares it
// with the committed files, so a schema change without `make generate`
// fails here.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	if _, err := exec.LookPath("capnp"); err != nil {
		if testing.Short() {
			t.Skip("capnp compiler not installed")
		}
		t.Fatal("the capnp compiler is missing: run `make deps` (apt-get install capnproto)")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	schemas, err := filepath.Glob(filepath.Join(root, "schema", "*.capnp"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range schemas {
		names = append(names, filepath.Base(s))
	}
	var want []string
	for name := range generated {
		want = append(want, name)
	}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Fatalf("schema/ holds %v, this test knows %v: add the new schema to the Makefile's generate target and to this test", names, want)
	}
	goCmd := func(args ...string) string {
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go %v: %v", args, err)
		}
		return strings.TrimSpace(string(out))
	}
	goCmd("mod", "download", "capnproto.org/go/capnp/v3")
	std := filepath.Join(goCmd("list", "-m", "-f", "{{.Dir}}", "capnproto.org/go/capnp/v3"), "std")
	plugin := goCmd("tool", "-n", "capnpc-go")
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			out := t.TempDir()
			cmd := exec.Command("capnp", "compile", "-I"+std, "-o"+plugin+":"+out, "--src-prefix=schema", "schema/"+name)
			cmd.Dir = root
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("capnp compile: %v\n%s", err, b)
			}
			fresh, err := os.ReadFile(filepath.Join(out, name+".go"))
			if err != nil {
				t.Fatal(err)
			}
			committed, err := os.ReadFile(filepath.Join(root, generated[name], name+".go"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(fresh, committed) {
				t.Fatalf("%s/%s.go is out of date with schema/%s: run `make generate` and commit the result", generated[name], name, name)
			}
		})
	}
}
