package reliability

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"capstats/internal/testbin"
)

// runBin runs a built command to completion and returns its stderr and
// exit code. With asNobody it runs as user nobody, so that permissions
// bind as they do for an operator's service user (root ignores them).
func runBin(t *testing.T, name string, asNobody bool, args ...string) (string, int) {
	t.Helper()
	bin := testbin.Build(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	if asNobody {
		if os.Geteuid() != 0 {
			t.Skip("dropping to nobody needs root")
		}
		// The binary must be reachable by nobody.
		pub := filepath.Join(t.TempDir(), name)
		b, err := os.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(pub, b, 0o755)
		openUp(filepath.Dir(pub))
		cmd = exec.CommandContext(ctx, pub, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stderr.String(), code
}

// openUp lets others traverse a t.TempDir() directory and the per-test
// directory above it, which the testing package makes 0700.
func openUp(dir string) {
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
}

func wantRefusal(t *testing.T, stderr string, code int, wants ...string) {
	t.Helper()
	if code == 0 {
		t.Fatalf("exit 0, want a refusal; stderr:\n%s", stderr)
	}
	line := strings.TrimSpace(stderr)
	if i := strings.LastIndex(line, "\n"); i >= 0 {
		line = line[i+1:]
	}
	for _, w := range wants {
		if !strings.Contains(line, w) {
			t.Errorf("error %q does not mention %q", line, w)
		}
	}
	if strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, "panic") {
		t.Errorf("stack trace in a user-facing error:\n%s", stderr)
	}
}

// TestSecretFilesReadableByOthersRefused: keys and furl files hold the
// secrets that make a tub who it is and grant access to the gatherer.
func TestSecretFilesReadableByOthersRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the commands")
	}
	t.Run("gatherer key", func(t *testing.T) {
		dir := createGatherer(t)
		key := filepath.Join(dir, "private", "gatherer.pem")
		os.Chmod(key, 0o644)
		stderr, code := runBin(t, "gatherer", false, "run", "--basedir", dir)
		wantRefusal(t, stderr, code, key, "chmod 600")
	})
	t.Run("gatherer furl file", func(t *testing.T) {
		dir := createGatherer(t)
		startGatherer(t, dir, "--interval", "1s").stop(t)
		furl := filepath.Join(dir, "stats_gatherer.furl")
		os.Chmod(furl, 0o640)
		stderr, code := runBin(t, "gatherer", false, "run", "--basedir", dir)
		wantRefusal(t, stderr, code, furl, "chmod 600")
	})
	t.Run("node key", func(t *testing.T) {
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, "private"), 0o700)
		// A first run creates the key; a world-readable copy is refused.
		p := exec.Command(testbin.Build(t, "capstats-node"), "--basedir", dir)
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		key := filepath.Join(dir, "private", "node.pem")
		waitFile(t, key)
		p.Process.Signal(syscall.SIGTERM)
		p.Wait()
		os.Chmod(key, 0o604)
		stderr, code := runBin(t, "capstats-node", false, "--basedir", dir)
		wantRefusal(t, stderr, code, key, "chmod 600")
	})
}

// TestNodeFurlFileTightened: the documented `echo FURL >
// stats_gatherer.furl` makes a file of mode 0644; the node uses it and
// makes it private, with one warning.
func TestNodeFurlFileTightened(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the commands")
	}
	dir := createGatherer(t)
	g := startGatherer(t, dir, "--interval", "1s")
	defer g.stop(t)
	furl, err := os.ReadFile(filepath.Join(dir, "stats_gatherer.furl"))
	if err != nil {
		t.Fatal(err)
	}
	ndir := t.TempDir()
	nfurl := filepath.Join(ndir, "stats_gatherer.furl")
	if err := os.WriteFile(nfurl, furl, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(nfurl, 0o644)
	p := exec.Command(testbin.Build(t, "capstats-node"), "--basedir", ndir)
	var stderr lockedBuffer
	p.Stderr = &stderr
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { p.Process.Signal(syscall.SIGTERM); p.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(stderr.String(), "connected to stats gatherer") {
		if time.Now().After(deadline) {
			t.Fatalf("node not connected within 20 s with a furl file of mode 0644:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	fi, err := os.Stat(nfurl)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("furl file mode %v, want 0600", fi.Mode().Perm())
	}
	if n := strings.Count(stderr.String(), "tightened it to 0600"); n != 1 {
		t.Fatalf("%d warnings, want 1:\n%s", n, stderr.String())
	}
}

// lockedBuffer collects a process's stderr while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not created within 20s", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBadBasedirs: a basedir that is a file, or that the service user
// cannot read, gets one clear line naming it.
func TestBadBasedirs(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the commands")
	}
	file := filepath.Join(t.TempDir(), "not-a-dir")
	os.WriteFile(file, []byte("x"), 0o644)
	for _, name := range []string{"gatherer", "capstats-node"} {
		t.Run(name+" basedir is a file", func(t *testing.T) {
			stderr, code := runBin(t, name, false, "--basedir", file)
			wantRefusal(t, stderr, code, file)
		})
	}

	// Unreadable for the user the command runs as.
	locked := filepath.Join(t.TempDir(), "locked")
	os.MkdirAll(filepath.Join(locked, "inside"), 0o700)
	openUp(filepath.Dir(locked))
	os.WriteFile(filepath.Join(locked, "inside", "x"), nil, 0o600)
	for _, name := range []string{"gatherer", "capstats-node"} {
		t.Run(name+" basedir unreadable", func(t *testing.T) {
			stderr, code := runBin(t, name, true, "--basedir", locked)
			wantRefusal(t, stderr, code, locked)
		})
	}
}
