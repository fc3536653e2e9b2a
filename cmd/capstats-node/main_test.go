package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"capstats/capnp/tub"
	"capstats/internal/testbin"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
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

// runOnce runs the node binary to completion (30 s at most).
func runOnce(t *testing.T, args ...string) (stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testbin.Build(t, "capstats-node"), args...)
	var e bytes.Buffer
	cmd.Stderr = &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return e.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return e.String(), 0
}

type proc struct {
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan error
}

func start(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), stderr: new(lockedBuffer), done: make(chan error, 1)}
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// waitLog waits up to 20 s for pattern in the process's stderr and returns
// the first submatch, if any.
func (p *proc) waitLog(t *testing.T, pattern string) string {
	t.Helper()
	re := regexp.MustCompile(pattern)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if m := re.FindStringSubmatch(p.stderr.String()); m != nil {
			if len(m) > 1 {
				return m[1]
			}
			return m[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in stderr within 20 s:\n%s", pattern, p.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopWith sends sig and expects exit status 0 within 10 s.
func (p *proc) stopWith(t *testing.T, sig os.Signal) {
	t.Helper()
	p.cmd.Process.Signal(sig)
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		if err != nil {
			t.Fatalf("exit after %v: %v; stderr:\n%s", sig, err, p.stderr)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no exit within 10 s of %v; stderr:\n%s", sig, p.stderr)
	}
}

func checkOneLineError(t *testing.T, stderr string, code int, wants ...string) {
	t.Helper()
	if code == 0 {
		t.Fatalf("exit status 0; stderr:\n%s", stderr)
	}
	var errLines []string
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if strings.HasPrefix(l, "capstats-node: error: ") {
			errLines = append(errLines, l)
		}
	}
	if len(errLines) != 1 {
		t.Fatalf("want one 'capstats-node: error:' line, stderr:\n%s", stderr)
	}
	for _, w := range wants {
		if !strings.Contains(errLines[0], w) {
			t.Errorf("error line %q lacks %q", errLines[0], w)
		}
	}
	if strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, "panic") {
		t.Errorf("stack trace in stderr:\n%s", stderr)
	}
}

func TestMalformedFurlExitsNonZero(t *testing.T) {
	id, err := tub.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	good := "capnp://" + id.TubID() + "@tcp:127.0.0.1:9/" + tub.NewSwissnum()
	cases := map[string]struct {
		content, want string
		mode          os.FileMode
	}{
		"garbage":  {"this is not a furl\n", "", 0},
		"foolscap": {"pb://" + strings.TrimPrefix(good, "capnp://") + "\n", "Foolscap", 0},
		"bad tub":  {"capnp://short@tcp:127.0.0.1:9/" + tub.NewSwissnum(), "", 0},
		"empty":    {"\n", "empty", 0},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "stats_gatherer.furl")
			mode := c.mode
			if mode == 0 {
				mode = 0o600
			}
			if err := os.WriteFile(path, []byte(c.content), mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(path, mode)
			stderr, code := runOnce(t, "--basedir", dir)
			wants := []string{path}
			if c.want != "" {
				wants = append(wants, c.want)
			}
			checkOneLineError(t, stderr, code, wants...)
		})
	}
}

func TestBadArguments(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	stderr, code := runOnce(t, "--basedir", f)
	checkOneLineError(t, stderr, code, f, "not a directory")

	stderr, code = runOnce(t, "--basedir", t.TempDir(), "--storage-dir", filepath.Join(t.TempDir(), "missing"))
	checkOneLineError(t, stderr, code, "--storage-dir")

	stderr, code = runOnce(t, "--basedir", t.TempDir(), "--max-backoff", "0s")
	checkOneLineError(t, stderr, code, "--max-backoff")

	if _, code := runOnce(t); code == 0 {
		t.Fatal("no --basedir: exit status 0")
	}
}

func TestCreatesBasedirAndStopsOnSignals(t *testing.T) {
	for _, sig := range []os.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "new", "node")
			p := start(t, testbin.Build(t, "capstats-node"), "--basedir", dir, "--nickname", "n1")
			tubID := p.waitLog(t, `msg="node running" tubid=([a-z2-7]{32})`)
			p.waitLog(t, `no stats gatherer configured`)
			fi, err := os.Stat(dir)
			if err != nil || fi.Mode().Perm() != 0o700 {
				t.Fatalf("basedir: %v, mode %v", err, fi.Mode())
			}
			if fi, err := os.Stat(filepath.Join(dir, "private", "node.pem")); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("identity: %v", err)
			}
			p.stopWith(t, sig)

			// The identity persists across restarts.
			p = start(t, testbin.Build(t, "capstats-node"), "--basedir", dir)
			if again := p.waitLog(t, `msg="node running" tubid=([a-z2-7]{32})`); again != tubID {
				t.Fatalf("tub ID changed across restarts: %s then %s", tubID, again)
			}
			p.stopWith(t, sig)
		})
	}
}

// statsEntry is the part of a stats.json entry this test reads.
type statsEntry struct {
	Timestamp float64 `json:"timestamp"`
	Nickname  string  `json:"nickname"`
	Stats     struct {
		Counters map[string]json.RawMessage `json:"counters"`
		Stats    map[string]json.RawMessage `json:"stats"`
	} `json:"stats"`
}

func readEntry(path, tubID string) (statsEntry, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return statsEntry{}, false
	}
	var all map[string]statsEntry
	if json.Unmarshal(b, &all) != nil {
		return statsEntry{}, false
	}
	e, ok := all[tubID]
	return e, ok
}

// The commands a user runs: a gatherer binary and a node binary. The node
// picks up a furl written into its basedir (on SIGHUP here), appears in
// stats.json with its nickname and tub ID, and is back after the gatherer
// is killed and restarted on the same basedir.
func TestNodeWithGathererBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs two binaries")
	}
	gbin, nbin := testbin.Build(t, "gatherer"), testbin.Build(t, "capstats-node")
	gdir := filepath.Join(t.TempDir(), "gatherer")
	if out, err := exec.Command(gbin, "create", "--basedir", gdir, "--hostname", "127.0.0.1").CombinedOutput(); err != nil {
		t.Fatalf("gatherer create: %v\n%s", err, out)
	}
	startGatherer := func() *proc {
		g := start(t, gbin, "run", "--basedir", gdir, "--interval", "1s")
		g.waitLog(t, `gatherer running`)
		return g
	}
	g := startGatherer()
	furl, err := os.ReadFile(filepath.Join(gdir, "stats_gatherer.furl"))
	if err != nil {
		t.Fatal(err)
	}

	ndir := filepath.Join(t.TempDir(), "node")
	storage := t.TempDir()
	if err := os.WriteFile(filepath.Join(storage, "share"), make([]byte, 12345), 0o600); err != nil {
		t.Fatal(err)
	}
	n := start(t, nbin, "--basedir", ndir, "--nickname", "alice", "--storage-dir", storage, "--furl-check", "1h")
	tubID := n.waitLog(t, `msg="node running" tubid=([a-z2-7]{32})`)
	// Written as `echo FURL > stats_gatherer.furl` does under the usual
	// umask: the node uses it, and makes it private.
	nfurl := filepath.Join(ndir, "stats_gatherer.furl")
	if err := os.WriteFile(nfurl, furl, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(nfurl, 0o644)
	n.cmd.Process.Signal(syscall.SIGHUP)
	n.waitLog(t, `connected to stats gatherer`)
	n.waitLog(t, `(furl file was open to other users; tightened it to 0600)`)
	if fi, err := os.Stat(nfurl); err != nil {
		t.Fatal(err)
	} else if fi.Mode().Perm() != 0o600 {
		t.Fatalf("node's furl file has mode %v after use, want 0600", fi.Mode().Perm())
	}

	statsPath := filepath.Join(gdir, "stats.json")
	var e statsEntry
	waitUntil(t, 10*time.Second, "the node in stats.json", func() bool {
		var ok bool
		e, ok = readEntry(statsPath, tubID)
		return ok && e.Timestamp > 0
	})
	if e.Nickname != "alice" {
		t.Errorf("nickname %q, want alice", e.Nickname)
	}
	for _, k := range []string{"node.uptime", "cpu_monitor.total", "load_monitor.avg_load", "go.goroutines", "storage_server.disk_total"} {
		if _, ok := e.Stats.Stats[k]; !ok {
			t.Errorf("stats.json lacks %s: %v", k, e.Stats.Stats)
		}
	}
	if _, ok := e.Stats.Counters["node.producer_errors"]; !ok {
		t.Errorf("stats.json lacks node.producer_errors: %v", e.Stats.Counters)
	}
	waitUntil(t, 10*time.Second, "storage_server.consumed", func() bool {
		e, _ := readEntry(statsPath, tubID)
		return string(e.Stats.Stats["storage_server.consumed"]) == "12345"
	})

	// Kill the gatherer hard and start it again on the same basedir.
	g.cmd.Process.Kill()
	<-g.done
	g.done <- nil
	n.waitLog(t, `connection to stats gatherer lost`)
	restart := time.Now()
	g = startGatherer()
	waitUntil(t, 60*time.Second, "a fresh sample after the restart", func() bool {
		e, ok := readEntry(statsPath, tubID)
		return ok && e.Timestamp > float64(restart.UnixNano())/1e9
	})
	t.Logf("node back in stats.json %v after the gatherer restarted", time.Since(restart).Round(time.Millisecond))

	n.stopWith(t, syscall.SIGTERM)
	g.stopWith(t, syscall.SIGTERM)
	if strings.Contains(n.stderr.String(), "level=ERROR") {
		t.Errorf("errors logged:\n%s", n.stderr)
	}
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
