package statsrpc

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestGeneratedCodeIsCurrent regenerates the Go code from schema/ with the
// capnp compiler and the pinned capnpc-go, and compares it with the
// committed file, so a schema change without `make generate` fails here.
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
	out := t.TempDir()
	cmd := exec.Command("capnp", "compile", "-I"+std, "-o"+plugin+":"+out, "--src-prefix=schema", "schema/stats.capnp")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("capnp compile: %v\n%s", err, b)
	}
	fresh, err := os.ReadFile(filepath.Join(out, "stats.capnp.go"))
	if err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile("stats.capnp.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fresh, committed) {
		t.Fatal("capnp/statsrpc/stats.capnp.go is out of date with schema/stats.capnp: run `make generate` and commit the result")
	}
}
