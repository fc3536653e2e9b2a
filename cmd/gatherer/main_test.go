package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"capstats/capnp/tub"
	"capstats/internal/fakenode"
	"capstats/internal/testbin"
	"capstats/internal/testutil"
	"capstats/openmetrics/omtest"
	"capstats/stats"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

func run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testbin.Build(t, "gatherer"), args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

// daemon is a running `gatherer run`.
type daemon struct {
	cmd    *exec.Cmd
	furl   string
	stderr *testutil.SyncBuffer
	lines  chan string
}

func startRun(t *testing.T, args ...string) *daemon {
	t.Helper()
	return startRunWith(t, nil, args...)
}

// startRunWith starts the gatherer under a wrapper command (e.g. prlimit)
// that execs it.
func startRunWith(t *testing.T, wrapper []string, args ...string) *daemon {
	t.Helper()
	argv := append(append(wrapper, testbin.Build(t, "gatherer")), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{cmd: cmd, stderr: &testutil.SyncBuffer{}, lines: make(chan string, 1000)}
	cmd.Stderr = d.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case d.lines <- sc.Text():
			default:
			}
		}
		close(d.lines)
	}()
	select {
	case line, ok := <-d.lines:
		if !ok || !strings.HasPrefix(line, "StatsGatherer: capnp://") {
			cmd.Wait()
			t.Fatalf("first line %q, want StatsGatherer: <furl>; stderr:\n%s", line, d.stderr)
		}
		d.furl = strings.TrimPrefix(line, "StatsGatherer: ")
	case <-time.After(20 * time.Second):
		t.Fatal("gatherer printed no furl within 20s")
	}
	return d
}

// stop sends SIGTERM and expects a clean exit.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("gatherer exited with %v after SIGTERM; stderr:\n%s", err, d.stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("gatherer did not exit within 20s of SIGTERM")
	}
}

func TestCreateRunRestartSameFurl(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "g")
	out, errOut, code := run(t, "create", "--basedir", dir, "--hostname", "127.0.0.1")
	if code != 0 {
		t.Fatalf("create: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, dir) {
		t.Errorf("create said %q", out)
	}
	for _, f := range []string{"private/gatherer.pem", "location", "port"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("create did not write %s: %v", f, err)
		}
	}
	if fi, _ := os.Stat(filepath.Join(dir, "private/gatherer.pem")); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %o", fi.Mode().Perm())
	}

	d := startRun(t, "run", "--basedir", dir, "--interval", "1s")
	// SIGHUP (log rotation, a closed terminal) does not stop it.
	d.cmd.Process.Signal(syscall.SIGHUP)
	testutil.WaitFor(t, "the SIGHUP to be noted", 10*time.Second, func() bool {
		return strings.Contains(d.stderr.String(), "SIGHUP ignored")
	})
	furlFile, err := os.ReadFile(filepath.Join(dir, "stats_gatherer.furl"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(furlFile)) != d.furl {
		t.Errorf("furl file %q, printed %q", furlFile, d.furl)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "stats_gatherer.furl")); fi.Mode().Perm() != 0o600 {
		t.Errorf("furl file mode %o, want 600", fi.Mode().Perm())
	}
	d.stop(t)
	if _, err := os.Stat(filepath.Join(dir, "stats.json")); err != nil {
		t.Errorf("no stats.json after a run: %v", err)
	}

	// `gatherer --basedir DIR` alone runs, with the same furl.
	d2 := startRun(t, "--basedir", dir, "--interval", "1s")
	if d2.furl != d.furl {
		t.Errorf("furl changed across restart: %s -> %s", d.furl, d2.furl)
	}
	d2.stop(t)

	out, _, code = run(t, "furl", "--basedir", dir)
	if code != 0 || strings.TrimSpace(out) != d.furl {
		t.Errorf("furl command: exit %d, %q", code, out)
	}
}

func TestRunOnEmptyBasedirCreatesLoopbackGatherer(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fresh")
	d := startRun(t, "--basedir", dir, "--interval", "1s")
	if !strings.Contains(d.furl, "@tcp:127.0.0.1:") {
		t.Errorf("furl %s does not point at 127.0.0.1", d.furl)
	}
	d.stop(t)
	port := d.furl[strings.Index(d.furl, "@tcp:127.0.0.1:")+len("@tcp:127.0.0.1:"):]
	port = port[:strings.Index(port, "/")]
	block := "created a new gatherer in " + dir + ", listening on 127.0.0.1:" + port + ";\nto reach it from other hosts: gatherer set-location --basedir " + dir + " --location tcp:HOST:" + port + " --port tcp:" + port
	if !strings.Contains(d.stderr.String(), block) {
		t.Errorf("no clear block on what was created and how to reach it from other hosts:\n%s", d.stderr)
	}
	// The advice works on that directory.
	if out, e, code := run(t, "set-location", "--basedir", dir, "--location", "tcp:stats.example.org:"+port, "--port", "tcp:"+port); code != 0 || !strings.Contains(out, "tcp:stats.example.org:"+port) {
		t.Fatalf("the suggested set-location: exit %d, %s%s", code, out, e)
	}
	// A second start does not print the block again.
	d2 := startRun(t, "--basedir", dir, "--interval", "1s")
	if !strings.Contains(d2.furl, "@tcp:stats.example.org:"+port+"/") {
		t.Errorf("after set-location the furl is %s", d2.furl)
	}
	d2.stop(t)
	if strings.Contains(d2.stderr.String(), "created a new gatherer") {
		t.Errorf("restart claims to have created a gatherer:\n%s", d2.stderr)
	}
}

// `gatherer run` never makes a gatherer: a missing or empty basedir is an
// error naming gatherer create, and that command works on that directory.
func TestRunRefusesMissingBasedirAndItsAdviceWorks(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "typo")
	empty := t.TempDir()
	for _, dir := range []string{missing, empty} {
		out, errOut, code := run(t, "run", "--basedir", dir)
		if code == 0 || strings.Contains(out, "StatsGatherer:") {
			t.Fatalf("run on %s: exit %d, stdout %q", dir, code, out)
		}
		if strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("error is not one line: %q", errOut)
		}
		m := regexp.MustCompile(`gatherer (create --basedir \S+ --hostname) HOST`).FindStringSubmatch(errOut)
		if m == nil || !strings.Contains(errOut, dir) {
			t.Fatalf("run on %s: stderr %q does not name gatherer create for it", dir, errOut)
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 0 {
			t.Fatalf("run wrote into %s: %v", dir, entries)
		}
		args := append(strings.Fields(m[1]), "127.0.0.1")
		if _, e, code := run(t, args...); code != 0 {
			t.Fatalf("the suggested %v failed: %s", args, e)
		}
		startRun(t, "run", "--basedir", dir, "--interval", "1s").stop(t)
	}
	// The other commands say the same about a basedir with no gatherer.
	for _, cmd := range []string{"status", "forget", "rotate-furl", "set-location"} {
		args := []string{cmd, "--basedir", filepath.Join(t.TempDir(), "none")}
		if cmd == "forget" {
			args = append(args, "x")
		}
		if cmd == "set-location" {
			args = append(args, "--port", "tcp:1")
		}
		_, errOut, code := run(t, args...)
		if code == 0 || !strings.Contains(errOut, "gatherer create --basedir") {
			t.Errorf("%s on a missing basedir: exit %d, %q", cmd, code, errOut)
		}
	}
}

func TestMismatchedFurlFileRefused(t *testing.T) {
	a := filepath.Join(t.TempDir(), "a")
	b := filepath.Join(t.TempDir(), "b")
	for _, dir := range []string{a, b} {
		if _, e, code := run(t, "create", "--basedir", dir, "--hostname", "127.0.0.1"); code != 0 {
			t.Fatal(e)
		}
	}
	startRun(t, "--basedir", a, "--interval", "1s").stop(t)
	furl, _ := os.ReadFile(filepath.Join(a, "stats_gatherer.furl"))
	os.WriteFile(filepath.Join(b, "stats_gatherer.furl"), furl, 0o600)
	_, errOut, code := run(t, "run", "--basedir", b)
	if code == 0 || !strings.Contains(errOut, "stats_gatherer.furl") || !strings.Contains(errOut, "names tub") {
		t.Fatalf("exit %d, stderr %q: want a refusal naming the furl file", code, errOut)
	}
	if strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Errorf("error is not one line: %q", errOut)
	}
}

func TestCreateUsageErrors(t *testing.T) {
	dir := t.TempDir()
	cases := [][]string{
		{"create", "--basedir", filepath.Join(dir, "x1")},
		{"create", "--basedir", filepath.Join(dir, "x2"), "--hostname", "h", "--port", "tcp:1234"},
		{"create", "--basedir", filepath.Join(dir, "x3"), "--location", "tcp:h:1"},
		{"create", "--basedir", filepath.Join(dir, "x4"), "--port", "tcp:1"},
		{"create", "--basedir", filepath.Join(dir, "x5"), "--location", "tcp:h:1", "--port", "tcp:notaport"},
		{"create", "--basedir", filepath.Join(dir, "x6"), "--location", "nonsense", "--port", "tcp:1"},
		{"create", "--hostname", "h"},
	}
	for _, args := range cases {
		_, errOut, code := run(t, args...)
		if code == 0 {
			t.Errorf("%v succeeded", args)
		}
		if errOut == "" || strings.Contains(errOut, "goroutine") || strings.Contains(errOut, "panic") {
			t.Errorf("%v: stderr %q", args, errOut)
		}
	}
	if _, _, code := run(t, "create", "--basedir", filepath.Join(dir, "ok"), "--location", "tcp:example.org:3456", "--port", "tcp:3456:interface=127.0.0.1"); code != 0 {
		t.Error("create with --location and --port failed")
	}
	port, _ := os.ReadFile(filepath.Join(dir, "ok", "port"))
	if strings.TrimSpace(string(port)) != "tcp:3456:interface=127.0.0.1" {
		t.Errorf("port file %q", port)
	}
}

func TestCreateRefusesNonEmptyBasedir(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "something"), []byte("x"), 0o644)
	_, errOut, code := run(t, "create", "--basedir", dir, "--hostname", "127.0.0.1")
	if code == 0 || !strings.Contains(errOut, "not empty") {
		t.Fatalf("exit %d, %q", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "private")); err == nil {
		t.Fatal("create wrote into a non-empty basedir")
	}
}

func TestCorruptStatsFileStopsRunUnchanged(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "g")
	if _, e, code := run(t, "create", "--basedir", dir, "--hostname", "127.0.0.1"); code != 0 {
		t.Fatal(e)
	}
	corrupt := []byte("{\"x\": [1, 2,\n")
	path := filepath.Join(dir, "stats.json")
	os.WriteFile(path, corrupt, 0o644)
	_, errOut, code := run(t, "run", "--basedir", dir)
	if code == 0 || !strings.Contains(errOut, path) || !strings.Contains(errOut, "backup") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, corrupt) {
		t.Fatal("corrupt stats.json was changed")
	}
}

func TestBasedirIsAFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o644)
	_, errOut, code := run(t, "run", "--basedir", f)
	if code == 0 || !strings.Contains(errOut, f) {
		t.Fatalf("exit %d, %q", code, errOut)
	}
}

func TestHTTPMetricsPassPromtool(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "g")
	d := startRun(t, "--basedir", dir, "--interval", "1s", "--http", "127.0.0.1:0")
	var base string
	testutil.WaitFor(t, "the http address in the log", 20*time.Second, func() bool {
		m := regexp.MustCompile(`url=(http://127\.0\.0\.1:\d+)/`).FindStringSubmatch(d.stderr.String())
		if m != nil {
			base = m[1]
		}
		return m != nil
	})
	furl, err := tub.ParseFurl(d.furl)
	if err != nil {
		t.Fatal(err)
	}
	_, conn := fakenode.Connect(t, furl, "scraped", fakenode.AnswerWith(stats.Snapshot{
		Counters: stats.SetOf(stats.Map{"storage_server.allocate": stats.Int(3)}),
		Stats: stats.SetOf(stats.Map{"load_monitor.avg_load": stats.Float(0.5),
			"storage_server.latencies.get.99_9_percentile": stats.Null()}),
	}))
	defer conn.Close()
	var metrics []byte
	testutil.WaitFor(t, "the node in /metrics", 20*time.Second, func() bool {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		metrics, _ = io.ReadAll(resp.Body)
		return bytes.Contains(metrics, []byte("load_monitor_avg_load{")) && bytes.Contains(metrics, []byte(`nickname="scraped"`))
	})
	if problems := omtest.Promtool(t, metrics); len(problems) != 0 {
		t.Errorf("promtool check metrics: %v\n%s", problems, metrics)
	}
	for _, want := range []string{"capstats_up{", "capstats_gatherer_rounds_total", "storage_server_allocate_total{"} {
		if !bytes.Contains(metrics, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	d.stop(t)

	// A taken address stops the command before it announces a furl.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	out, errOut, code := run(t, "--basedir", dir, "--http", ln.Addr().String())
	if code == 0 || strings.Contains(out, "StatsGatherer:") || !strings.Contains(errOut, "--http") {
		t.Errorf("taken --http address: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}
