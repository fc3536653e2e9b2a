package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"capstats/internal/testbin"
)

// TestVersion: every binary prints one line with its name, module version
// and, when built from a git checkout, the checkout's revision; gatherer
// needs no --basedir for it.
func TestVersion(t *testing.T) {
	root := testbin.Root(t)
	// The go command stamps VCS data only when the module root has a .git
	// directory (not in a git worktree, whose .git is a file) and it is
	// not turned off (GOFLAGS=-buildvcs=false): build with -buildvcs=auto
	// as `make build` does, and check the revision where it can apply.
	head := ""
	if fi, err := os.Stat(filepath.Join(root, ".git")); err == nil && fi.IsDir() {
		if out, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output(); err == nil {
			head = strings.TrimSpace(string(out))
		}
	}
	dir := t.TempDir()
	for _, name := range []string{"gatherer", "capstats-node", "tahoe_stats"} {
		bin := testbin.Build(t, name)
		if head != "" {
			bin = filepath.Join(dir, name)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			cmd := exec.CommandContext(ctx, "go", "build", "-buildvcs=auto", "-o", bin, "./cmd/"+name)
			cmd.Dir = root
			out, err := cmd.CombinedOutput()
			cancel()
			if err != nil {
				t.Fatalf("go build -buildvcs=auto ./cmd/%s: %v\n%s", name, err, out)
			}
		}
		cmd := exec.Command(bin, "--version")
		cmd.Env = append(os.Environ(), "CAPSTATS_GATHERER_BASEDIR=", "CAPSTATS_NODE_BASEDIR=")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s --version: %v\n%s", name, err, out)
			continue
		}
		line := strings.TrimSuffix(string(out), "\n")
		if strings.Contains(line, "\n") || !strings.HasPrefix(line, name+" ") || !strings.Contains(line, " (") {
			t.Errorf("%s --version printed %q, want one line \"%s VERSION (...)\"", name, out, name)
		}
		if head != "" && !strings.Contains(line, "revision "+head) {
			t.Errorf("%s --version = %q, want the checkout's revision %s", name, line, head)
		}
	}
	if head == "" {
		t.Logf("revision not checked: %s has no .git directory (a git worktree or a tarball), so the go command stamps none", root)
	}
}
