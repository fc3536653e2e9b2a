package e2e

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"capstats/internal/testbin"
	"capstats/internal/testutil"
	"capstats/statsfile"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

type proc struct {
	name   string
	cmd    *exec.Cmd
	out    *testutil.SyncBuffer
	exited chan struct{}
}

// start runs a command in its own process group; the test's cleanup kills
// the group.
func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &proc{name: filepath.Base(name), cmd: cmd, out: &testutil.SyncBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	})
	return p
}

func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not exit within 20s of %v:\n%s", p.name, sig, p.out)
	}
	if sig == syscall.SIGTERM {
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("%s exited %d after SIGTERM:\n%s", p.name, code, p.out)
		}
	}
}

func mustRun(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// fresh reports whether stats.json holds every tub ID with a sample taken
// after since.
func fresh(path string, since time.Time, tubIDs ...string) bool {
	f, err := statsfile.Load(path)
	if err != nil {
		return false
	}
	got := map[string]bool{}
	for _, n := range f.Nodes {
		if n.Up && n.Timestamp > float64(since.UnixNano())/1e9 {
			got[n.TubID] = true
		}
	}
	for _, id := range tubIDs {
		if !got[id] {
			return false
		}
	}
	return true
}

// nodeTubID reads the tub ID a node logs at start.
func nodeTubID(t *testing.T, p *proc) string {
	t.Helper()
	var id string
	testutil.WaitFor(t, p.name+" to log its tub ID", 20*time.Second, func() bool {
		sc := bufio.NewScanner(strings.NewReader(p.out.String()))
		for sc.Scan() {
			line := sc.Text()
			if i := strings.Index(line, "tubid="); i >= 0 {
				id = strings.Fields(line[i+len("tubid="):])[0]
				return len(id) == 32
			}
		}
		return false
	})
	return id
}

func TestOperatorPath(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real commands and munin")
	}
	if _, err := exec.LookPath("munin-run"); err != nil {
		t.Fatal("munin-run is missing: run `make deps` (apt-get install munin-node)")
	}
	gathererBin := testbin.Build(t, "gatherer")
	nodeBin := testbin.Build(t, "capstats-node")
	pluginBin := testbin.Build(t, "tahoe_stats")
	root := testbin.Root(t)
	work := t.TempDir()
	gdir := filepath.Join(work, "gatherer")
	statsPath := filepath.Join(gdir, "stats.json")

	mustRun(t, nil, gathererBin, "create", "--basedir", gdir, "--hostname", "127.0.0.1")
	g := start(t, gathererBin, "run", "--basedir", gdir, "--interval", "1s", "--verbose")
	furlPath := filepath.Join(gdir, "stats_gatherer.furl")
	testutil.WaitFor(t, "furl file", 20*time.Second, func() bool { _, err := os.Stat(furlPath); return err == nil })
	furl, _ := os.ReadFile(furlPath)

	var ids []string
	var nodes []*proc
	for _, nick := range []string{"alpha", "beta"} {
		dir := filepath.Join(work, nick)
		os.MkdirAll(dir, 0o700)
		os.WriteFile(filepath.Join(dir, "stats_gatherer.furl"), furl, 0o600)
		n := start(t, nodeBin, "--basedir", dir, "--nickname", nick)
		nodes = append(nodes, n)
		ids = append(ids, nodeTubID(t, n))
	}
	began := time.Now()
	testutil.WaitFor(t, "both nodes in stats.json", 30*time.Second, func() bool { return fresh(statsPath, began, ids...) })
	// Another round, so the load monitor has samples.
	time.Sleep(1500 * time.Millisecond)

	// Install the plugin as an operator would, into dirs of this test.
	lib, plugins, conf := filepath.Join(work, "lib"), filepath.Join(work, "plugins"), filepath.Join(work, "conf")
	for _, d := range []string{lib, plugins, conf} {
		os.MkdirAll(d, 0o755) // as installing munin-node leaves them
	}
	out := mustRun(t, nil, filepath.Join(root, "scripts", "install-munin.sh"),
		"--lib-dir", lib, "--plugins-dir", plugins, "--conf-dir", conf,
		"--statsfile", statsPath, "--bin", pluginBin, "--user", "root")
	if !strings.Contains(out, "munin-node") {
		t.Errorf("install script does not say how to restart munin-node:\n%s", out)
	}
	if _, err := os.Lstat(filepath.Join(plugins, "tahoe_runtime_load_avg")); err != nil {
		t.Fatalf("install script did not link tahoe_runtime_load_avg: %v\n%s", err, out)
	}
	config := mustRun(t, nil, "munin-run", "--servicedir", plugins, "--sconfdir", conf, "tahoe_runtime_load_avg", "config")
	fetch := mustRun(t, nil, "munin-run", "--servicedir", plugins, "--sconfdir", conf, "tahoe_runtime_load_avg")
	if !strings.HasPrefix(config, "graph_title Tahoe Runtime Load Average\n") {
		t.Errorf("config:\n%s", config)
	}
	for i, nick := range []string{"alpha", "beta"} {
		name := nick + "_" + ids[i][:4]
		if !strings.Contains(config, name+".label "+name+"\n") {
			t.Errorf("config lacks %s:\n%s", name, config)
		}
		if !strings.Contains(fetch, name+".value ") {
			t.Errorf("fetch lacks %s:\n%s", name, fetch)
		}
	}

	// SIGKILL the gatherer and start it again on the same basedir.
	g.signal(t, syscall.SIGKILL)
	restarted := time.Now()
	g2 := start(t, gathererBin, "run", "--basedir", gdir, "--interval", "1s")
	// A bound to give up by; how fast nodes come back is benchmarked
	// (bench.BenchmarkHandshakeStorm/restart).
	took := testutil.WaitFor(t, "both nodes back after the restart", 2*time.Minute, func() bool { return fresh(statsPath, restarted, ids...) })
	t.Logf("nodes back %s after the gatherer restart", took)
	if again, _ := os.ReadFile(furlPath); !bytes.Equal(again, furl) {
		t.Errorf("furl changed across the restart:\n%s\n%s", furl, again)
	}

	for _, n := range nodes {
		n.signal(t, syscall.SIGTERM)
	}
	g2.signal(t, syscall.SIGTERM)
	for _, p := range append(nodes, g, g2) {
		if err := syscall.Kill(-p.cmd.Process.Pid, 0); err == nil {
			t.Errorf("process group of %s still has members", p.name)
		}
	}
}

// TestDemo runs `make demo`'s script against freshly built binaries, so
// the demo cannot rot: its output must show the furl, the three nodes and
// munin output, it must finish in bounded time, and leave no process.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo")
	}
	gathererBin := testbin.Build(t, "gatherer")
	testbin.Build(t, "capstats-node")
	testbin.Build(t, "tahoe_stats")
	binDir := filepath.Dir(gathererBin)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(testbin.Root(t), "scripts", "demo.sh"))
	cmd.Env = append(os.Environ(), "BIN="+binDir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out)
	}
	t.Logf("demo took %s", time.Since(start).Round(time.Millisecond))
	s := string(out)
	for _, want := range []string{"capnp://", "NICKNAME", "alpha", "beta", "gamma",
		"graph_title Tahoe Runtime Load Average", ".value ", "Stopping",
		"these URLs stop working when the demo ends", "`make run` keeps them up"} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q:\n%s", want, s)
		}
	}
	if strings.Count(s, " yes ") < 3 {
		t.Errorf("demo table does not show three nodes up:\n%s", s)
	}
	// No process of the demo left: nothing runs a binary from binDir.
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, p := range procs {
		exe, err := os.Readlink(p)
		if err == nil && strings.HasPrefix(exe, binDir+"/") {
			pid, _ := strconv.Atoi(strings.Split(p, "/")[2])
			syscall.Kill(pid, syscall.SIGKILL)
			t.Errorf("demo left %s running (pid %d)", exe, pid)
		}
	}
}

// TestMakeInstall installs the three commands under a DESTDIR, as a
// packager would.
func TestMakeInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds all commands")
	}
	dest := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", "install", "PREFIX=/usr", "DESTDIR="+dest)
	cmd.Dir = testbin.Root(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	// A binary called "node" would shadow Node.js in PATH.
	if _, err := os.Stat(filepath.Join(dest, "usr", "bin", "node")); err == nil {
		t.Errorf("make install installed a binary named node, which shadows Node.js")
	}
	for _, name := range []string{"gatherer", "capstats-node", "tahoe_stats"} {
		path := filepath.Join(dest, "usr", "bin", name)
		fi, err := os.Stat(path)
		if err != nil {
			t.Errorf("make install did not install %s: %v", name, err)
			continue
		}
		if fi.Mode().Perm() != 0o755 {
			t.Errorf("%s has mode %o, want 755", path, fi.Mode().Perm())
		}
		if out, err := exec.Command(path, "--help").CombinedOutput(); err != nil {
			t.Errorf("installed %s --help: %v\n%s", name, err, out)
		}
	}
	// The units, pointed at PREFIX, and the munin setup script.
	for unit, want := range map[string]string{
		"capstats-gatherer.service": "\nExecStart=/usr/bin/gatherer run ",
		"capstats-node.service":     "\nExecStart=/usr/bin/capstats-node ",
	} {
		b, err := os.ReadFile(filepath.Join(dest, "usr", "lib", "systemd", "system", unit))
		if err != nil || !strings.Contains(string(b), want) || strings.Contains(string(b), "/usr/local/") {
			t.Errorf("make install PREFIX=/usr: %s lacks %q or names /usr/local: %v\n%s", unit, strings.TrimSpace(want), err, b)
		}
	}
	if out, err := exec.Command(filepath.Join(dest, "usr", "sbin", "capstats-install-munin"), "--help").CombinedOutput(); err != nil || !strings.Contains(string(out), "--uninstall") {
		t.Errorf("installed capstats-install-munin --help: %v\n%s", err, out)
	}
}

// TestDemoKeep: `make run` (DEMO_KEEP=1) keeps the demo running until
// Ctrl-C, then stops everything.
func TestDemoKeep(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo")
	}
	binDir := filepath.Dir(testbin.Build(t, "gatherer"))
	testbin.Build(t, "capstats-node")
	testbin.Build(t, "tahoe_stats")
	cmd := exec.Command(filepath.Join(testbin.Root(t), "scripts", "demo.sh"))
	cmd.Env = append(os.Environ(), "BIN="+binDir, "DEMO_KEEP=1")
	out := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() { cmd.Process.Kill(); <-exited }()
	testutil.WaitFor(t, "the demo to say it keeps running", 60*time.Second, func() bool {
		return strings.Contains(out.String(), "Ctrl-C to stop")
	})
	select {
	case <-exited:
		t.Fatalf("the demo exited although DEMO_KEEP=1:\n%s", out)
	case <-time.After(2 * time.Second):
	}
	cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("the demo did not stop within 30s of Ctrl-C:\n%s", out)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, p := range procs {
		if exe, err := os.Readlink(p); err == nil && strings.HasPrefix(exe, binDir+"/") {
			pid, _ := strconv.Atoi(strings.Split(p, "/")[2])
			syscall.Kill(pid, syscall.SIGKILL)
			t.Errorf("Ctrl-C left %s running (pid %d)", exe, pid)
		}
	}
}

// TestSystemdUnits: the units run the commands as an unprivileged user
// with the basedir as the only writable path, and systemd accepts them.
func TestSystemdUnits(t *testing.T) {
	dir := filepath.Join(testbin.Root(t), "scripts", "systemd")
	for name, unitCmd := range map[string]struct{ basedir, bin string }{
		"capstats-gatherer.service": {"/var/lib/capstats/gatherer", "gatherer"},
		"capstats-node.service":     {"/var/lib/capstats/node", "capstats-node"},
	} {
		basedir, cmdName := unitCmd.basedir, unitCmd.bin
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		unit := string(b)
		for _, want := range []string{"\nUser=capstats\n", "\nProtectSystem=strict\n", "\nReadWritePaths=" + basedir + "\n", "--basedir " + basedir, "\nNoNewPrivileges=yes\n"} {
			if !strings.Contains(unit, want) {
				t.Errorf("%s lacks %q", name, strings.TrimSpace(want))
			}
		}
		if strings.Count(unit, "ReadWritePaths=") != 1 {
			t.Errorf("%s: more than one writable path", name)
		}
		if _, err := exec.LookPath("systemd-analyze"); err != nil {
			continue // no systemd on this machine: the checks above stand
		}
		// systemd-analyze wants the binaries to exist: point them at built ones.
		tmp := filepath.Join(t.TempDir(), name)
		os.WriteFile(tmp, []byte(strings.ReplaceAll(unit, "/usr/local/bin/"+cmdName, testbin.Build(t, cmdName))), 0o644)
		out, err := exec.Command("systemd-analyze", "verify", tmp).CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) != 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", name, err, out)
		}
	}
}
