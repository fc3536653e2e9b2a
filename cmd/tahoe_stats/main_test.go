package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"capstats/muninplugin"
	"capstats/statsfile"
)

// pluginBin is the tahoe_stats binary built for this test run: the tests
// run the program the way munin does, not just the library.
var pluginBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tahoe_stats-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// World-readable, so that munin can run the plugin as any user.
	os.Chmod(dir, 0o755)
	pluginBin = filepath.Join(dir, "tahoe_stats")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	cmd := exec.CommandContext(ctx, goTool(), "build", "-o", pluginBin, "capstats/cmd/tahoe_stats")
	out, err := cmd.CombinedOutput()
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build capstats/cmd/tahoe_stats: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// goTool is the go command that runs the tests: $GOROOT/bin/go (go test
// sets GOROOT), else the one "go env GOROOT" names (runtime.GOROOT is
// deprecated), else "go" on PATH.
func goTool() string {
	root := os.Getenv("GOROOT")
	if root == "" {
		if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
			root = strings.TrimSpace(string(out))
		}
	}
	if p := filepath.Join(root, "bin", "go"); root != "" && fileExists(p) {
		return p
	}
	return "go"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

const fixtureNow = 1700000000 // the golden fixture's "now"

// freshFixture writes the plugin's golden fixture with timestamps moved to
// the present, so that munin (which uses the real clock) sees the same
// fresh and stale nodes; ages near the 300 s limit are moved away from it so
// that the test does not depend on how long it takes. It returns the path,
// in a directory any user can read.
func freshFixture(t *testing.T) string {
	t.Helper()
	f, err := statsfile.Load("../../muninplugin/testdata/stats.json")
	if err != nil {
		t.Fatal(err)
	}
	now := float64(time.Now().UnixNano()) / 1e9
	for i := range f.Nodes {
		age := fixtureNow - f.Nodes[i].Timestamp
		switch {
		case age > muninplugin.StaleSeconds:
			age = 3600
		case age > muninplugin.StaleSeconds-60:
			age = muninplugin.StaleSeconds - 60
		}
		f.Nodes[i].Timestamp = now - age
	}
	dir := worldReadableDir(t)
	path := filepath.Join(dir, "stats.json")
	if err := statsfile.WriteFile(path, f); err != nil {
		t.Fatal(err)
	}
	return path
}

// worldReadableDir is a temp dir under os.TempDir with mode 0755 (t.TempDir
// is 0700 under a 0700 parent, which an unprivileged plugin user cannot
// enter).
func worldReadableDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tahoe_stats-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// expected is what the plugin library prints for the file at path now.
func expected(t *testing.T, name, mode, path string, env ...string) string {
	t.Helper()
	var out bytes.Buffer
	p := &muninplugin.Plugin{Name: name, Env: append([]string{"statsfile=" + path}, env...), Stdout: &out}
	if err := p.Run(mode); err != nil {
		t.Fatalf("%s %s: %v", name, mode, err)
	}
	return out.String()
}

// runAs runs the built binary under the given name (a symlink in a temp
// dir, as munin's plugins dir holds it), with env.
func runAs(t *testing.T, name string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	dir := t.TempDir()
	link := filepath.Join(dir, name)
	if err := os.Symlink(pluginBin, link); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, link, args...)
	cmd.Env = env
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = cmd.ProcessState.ExitCode()
	if err != nil && code <= 0 {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return o.String(), e.String(), code
}

func TestBinaryUnderGraphNames(t *testing.T) {
	path := freshFixture(t)
	env := []string{"statsfile=" + path, "MUNIN_CAP_MULTIGRAPH=1"}
	for _, c := range []struct{ name, mode string }{
		{"tahoe_storage_allocated", ""},
		{"tahoe_storage_allocated", "config"},
		{"tahoe_storage_allocated.py", "fetch"},
		{"tahoe_runtime_load_avg", ""},
		{"tahoe_helper_active_uploads", "config"},
		{"tahoe_multigraph", ""},
		{"tahoe_multigraph", "config"},
		{"tahoe_", "suggest"},
		{"tahoe_", "autoconf"},
	} {
		var args []string
		if c.mode != "" {
			args = []string{c.mode}
		}
		stdout, stderr, code := runAs(t, c.name, env, args...)
		want := expected(t, muninplugin.InvocationName(c.name), c.mode, path, "MUNIN_CAP_MULTIGRAPH=1")
		if code != 0 || stderr != "" || stdout != want {
			t.Errorf("%s %s: exit %d, stderr %q, stdout\n%s\nwant\n%s", c.name, c.mode, code, stderr, stdout, want)
		}
	}
	// The stale node is U, the others have values.
	stdout, _, _ := runAs(t, "tahoe_storage_allocated", env)
	if !strings.Contains(stdout, "old_node_o7f3.value U\n") || !strings.Contains(stdout, "storage_1_xfmy.value 0\n") {
		t.Errorf("fetch:\n%s", stdout)
	}
	// --graph and --statsfile for people at a shell.
	stdout, stderr, code := runAs(t, "tahoe_stats", nil, "--graph", "tahoe_storage_allocated", "--statsfile", path)
	if code != 0 || stdout != expected(t, "tahoe_storage_allocated", "", path) {
		t.Errorf("tahoe_stats --graph: exit %d, %q %q", code, stdout, stderr)
	}
	stdout, _, code = runAs(t, "tahoe_stats", nil, "--list")
	if code != 0 || stdout != strings.Join(muninplugin.GraphNames(), "\n")+"\n" {
		t.Errorf("--list: exit %d, %q", code, stdout)
	}
	stdout, _, code = runAs(t, "tahoe_storage_allocated", nil, "--help")
	if code != 0 || !strings.Contains(stdout, "Usage: tahoe_storage_allocated") || !strings.Contains(stdout, "env.statsfile") {
		t.Errorf("--help: exit %d, %q", code, stdout)
	}
}

// Errors: one line on stderr naming the plugin, a non-zero exit, nothing on
// stdout, no stack trace.
func TestBinaryErrors(t *testing.T) {
	path := freshFixture(t)
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.json")
	if err := os.WriteFile(corrupt, []byte(`{"x": {"stats": {"stats": {"a": "b"}}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.json")
	for _, c := range []struct {
		name string
		env  []string
		args []string
		code int
		want []string
	}{
		{"tahoe_storage_allocated", nil, nil, 1, []string{"tahoe_storage_allocated: no stats file configured", "env.statsfile"}},
		{"tahoe_storage_allocated", []string{"statsfile=" + missing}, nil, 1, []string{missing, "no such file or directory"}},
		{"tahoe_storage_allocated", []string{"statsfile=" + corrupt}, []string{"config"}, 1, []string{corrupt, "line 1, column 33", `"a" must be a number or null`}},
		{"tahoe_nonsense", []string{"statsfile=" + path}, nil, 1, []string{`tahoe_nonsense: "tahoe_nonsense" is not a known graph`, "tahoe_storage_allocated, tahoe_storage_bytes_added"}},
		{"tahoe_stats", []string{"statsfile=" + path}, nil, 1, []string{"not a known graph", "known graphs: tahoe_runtime_load_avg"}},
		{"tahoe_", []string{"statsfile=" + path}, []string{"config"}, 1, []string{"wildcard plugin"}},
		{"tahoe_multigraph", []string{"statsfile=" + path}, nil, 1, []string{"MUNIN_CAP_MULTIGRAPH=1"}},
		{"tahoe_storage_allocated", []string{"statsfile=" + path}, []string{"frobnicate"}, 1, []string{`unknown argument "frobnicate"`}},
		{"tahoe_storage_allocated", []string{"statsfile=" + path}, []string{"config", "extra"}, 2, []string{"unexpected argument extra", "--help"}},
		{"tahoe_storage_allocated", []string{"statsfile=" + path}, []string{"--bogus"}, 2, []string{"unknown flag --bogus"}},
	} {
		stdout, stderr, code := runAs(t, c.name, c.env, c.args...)
		if code != c.code {
			t.Errorf("%s %v: exit %d, want %d (stderr %q)", c.name, c.args, code, c.code, stderr)
		}
		if stdout != "" {
			t.Errorf("%s %v: stdout %q", c.name, c.args, stdout)
		}
		if strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") || strings.Contains(stderr, "goroutine") {
			t.Errorf("%s %v: stderr is not one line: %q", c.name, c.args, stderr)
		}
		for _, w := range c.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%s %v: stderr %q does not contain %q", c.name, c.args, stderr, w)
			}
		}
	}
	// autoconf never fails: munin wants one line and exit 0.
	stdout, stderr, code := runAs(t, "tahoe_", []string{"statsfile=" + missing}, "autoconf")
	if code != 0 || stderr != "" || stdout != "no (stats file "+missing+": no such file or directory)\n" {
		t.Errorf("autoconf with a missing file: exit %d, %q, %q", code, stdout, stderr)
	}
}

// The magic markers must be on lines of their own in the binary for
// munin-node-configure (it reads the file line by line), and no other line
// may carry a marker munin would read. (Compressed debug data can hold the
// bytes "#%#" by chance; munin ignores those unless a key follows.)
func TestMagicMarkersInBinary(t *testing.T) {
	data, err := os.ReadFile(pluginBin)
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]int{}
	others := 0
	for _, l := range bytes.Split(data, []byte("\n")) {
		if !bytes.Contains(l, []byte("#%#")) {
			continue
		}
		lines[string(l)]++
		if s := string(l); s != "#%# family=auto" && s != "#%# capabilities=autoconf suggest" {
			others++
			if regexp.MustCompile(`#%#\s*(family|capabilities)\s*=`).MatchString(s) {
				t.Errorf("a stray marker munin would read: %q", s)
			}
		}
	}
	if lines["#%# family=auto"] == 0 || lines["#%# capabilities=autoconf suggest"] == 0 {
		t.Errorf("marker lines missing; lines with #%%# in the binary: %d others, %v", others, lines)
	}
}

// The plugin must not pull in the RPC stack: it starts once per graph every
// five minutes.
func TestImportsStayLight(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, goTool(), "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "capstats/cmd/tahoe_stats").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	allowed := map[string]bool{
		"capstats/stats": true, "capstats/statsfile": true, "capstats/muninplugin": true,
		"capstats/internal/atomicfile": true, // statsfile's writer; standard library only
		"capstats/internal/version":    true, // --version; standard library only
		"capstats/cmd/tahoe_stats":     true, "github.com/alecthomas/kong": true,
	}
	for _, p := range strings.Fields(string(out)) {
		if !allowed[p] {
			t.Errorf("tahoe_stats imports %s; only stats, statsfile (and its internal/atomicfile), internal/version, muninplugin, kong and the standard library are allowed", p)
		}
	}
}

// In-process: the exit codes and streams of run.
func TestRun(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"/x/tahoe_storage_allocated", "config"}, []string{"statsfile=../../muninplugin/testdata/stats.json"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.HasPrefix(out.String(), "graph_title Tahoe Storage Server Space Allocated\n") {
		t.Errorf("config: %q", out.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"tahoe_x"}, nil, &out, &errb); code != 1 || !strings.HasPrefix(errb.String(), "tahoe_x: ") {
		t.Errorf("unknown graph: exit %d, %q", code, errb.String())
	}
	if code := run(nil, nil, &out, &errb); code != 1 {
		t.Errorf("no argv: exit %d", code)
	}
}

// BenchmarkProcessFetch1000 times the whole process, as munin sees it:
// exec, Go start-up, reading a 1,000-node file, printing one graph.
func BenchmarkProcessFetch1000(b *testing.B) { benchProcess(b, "tahoe_storage_allocated") }

func BenchmarkProcessConfig1000(b *testing.B) {
	benchProcess(b, "tahoe_storage_allocated", "config")
}

func BenchmarkProcessMultigraphFetch1000(b *testing.B) { benchProcess(b, "tahoe_multigraph") }

func benchProcess(b *testing.B, name string, args ...string) {
	dir := b.TempDir()
	path := filepath.Join(dir, "stats.json")
	if err := statsfile.WriteFile(path, benchFile(1000)); err != nil {
		b.Fatal(err)
	}
	link := filepath.Join(dir, name)
	if err := os.Symlink(pluginBin, link); err != nil {
		b.Fatal(err)
	}
	env := []string{"statsfile=" + path, "MUNIN_CAP_MULTIGRAPH=1"}
	for b.Loop() {
		cmd := exec.Command(link, args...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
	}
}
