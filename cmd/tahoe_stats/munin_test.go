package main

// Tests against the real munin from Debian (package munin-node: munin-run,
// munin-node, munin-node-configure), never the machine's own munin config:
// everything lives in temp dirs, and munin-node runs in a private mount
// namespace with the temp dirs bind-mounted over /etc/munin/plugins and
// /etc/munin/plugin-conf.d (munin-node 2.0 has no option for them).

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"capstats/muninplugin"
	"capstats/stats"
	"capstats/statsfile"
)

// muninTool finds a munin program. Missing munin is a failure, not a skip
// (CI must run these tests), except with -short.
func muninTool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if p := "/usr/sbin/" + name; fileExists(p) {
		return p
	}
	if testing.Short() {
		t.Skipf("%s not installed (-short)", name)
	}
	t.Fatalf("%s not found: run `make deps` (scripts/ensure-deps.sh installs Debian's munin-node), or go test -short to skip the munin tests", name)
	return ""
}

// muninSetup is a plugin library, a plugins (service) dir and a
// plugin-conf.d, as scripts/install-munin.sh lays them out.
type muninSetup struct {
	lib, plugins, conf, statsFile string
}

func newMuninSetup(t *testing.T, statsFile string, graphs ...string) *muninSetup {
	t.Helper()
	root := worldReadableDir(t)
	s := &muninSetup{
		lib: filepath.Join(root, "lib"), plugins: filepath.Join(root, "plugins"),
		conf: filepath.Join(root, "plugin-conf.d"), statsFile: statsFile,
	}
	for _, d := range []string{s.lib, s.plugins, s.conf} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin, err := os.ReadFile(pluginBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.lib, "tahoe_"), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, g := range graphs {
		if err := os.Symlink(filepath.Join(s.lib, "tahoe_"), filepath.Join(s.plugins, g)); err != nil {
			t.Fatal(err)
		}
	}
	conf := "[tahoe_*]\nuser root\nenv.statsfile " + statsFile + "\n"
	if err := os.WriteFile(filepath.Join(s.conf, "tahoe_stats"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// run runs a command with a deadline (munin-run has no timeout of its own).
func runCmd(t *testing.T, timeout time.Duration, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s %v: timed out after %v", name, args, timeout)
	}
	return o.String(), e.String(), err
}

func TestMuninRun(t *testing.T) {
	muninRun := muninTool(t, "munin-run")
	path := freshFixture(t)
	s := newMuninSetup(t, path, "tahoe_storage_allocated", "tahoe_runtime_load_avg", "tahoe_storage_operations_get", "tahoe_multigraph")
	mr := func(args ...string) (string, string, error) {
		return runCmd(t, time.Minute, muninRun, append([]string{"--servicedir", s.plugins, "--sconfdir", s.conf}, args...)...)
	}
	for _, c := range []struct{ plugin, mode string }{
		{"tahoe_storage_allocated", "config"},
		{"tahoe_storage_allocated", ""},
		{"tahoe_runtime_load_avg", "config"},
		{"tahoe_runtime_load_avg", ""},
		{"tahoe_storage_operations_get", "config"},
		{"tahoe_storage_operations_get", ""},
		{"tahoe_storage_allocated", "autoconf"},
		{"tahoe_storage_allocated", "suggest"},
		{"tahoe_multigraph", "config"}, // munin-run announces multigraph
		{"tahoe_multigraph", ""},
	} {
		args := []string{c.plugin}
		if c.mode != "" {
			args = append(args, c.mode)
		}
		stdout, stderr, err := mr(args...)
		if err != nil {
			t.Errorf("munin-run %v: %v\n%s", args, err, stderr)
			continue
		}
		want := expected(t, c.plugin, c.mode, path, "MUNIN_CAP_MULTIGRAPH=1")
		if stdout != want {
			t.Errorf("munin-run %v:\n%s\nwant\n%s", args, stdout, want)
		}
	}
	// What munin sees for the fixture: fresh values, U for the stale node,
	// nothing for the null stat, the digit-led name prefixed.
	stdout, _, _ := mr("tahoe_runtime_load_avg")
	if want := "storage_1_xfmy.value 0.0015\n_1st_helper_q5mb.value 0.5\nold_node_o7f3.value U\nn_ud__t__ll2s.value 0.002\n"; stdout != want {
		t.Errorf("munin-run tahoe_runtime_load_avg:\n%s\nwant\n%s", stdout, want)
	}
	if stdout, _, _ := mr("tahoe_storage_allocated", "autoconf"); stdout != "yes\n" {
		t.Errorf("autoconf: %q", stdout)
	}
	// A broken stats file: munin-run reports the plugin's failure.
	if err := os.WriteFile(path, []byte("{broken"), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err := mr("tahoe_storage_allocated")
	if err == nil || stdout != "" || !strings.Contains(stderr, "tahoe_storage_allocated: stats file "+path+": line 1, column 2") {
		t.Errorf("broken file: err %v, stdout %q, stderr %q", err, stdout, stderr)
	}
}

func TestMuninNodeConfigure(t *testing.T) {
	mnc := muninTool(t, "munin-node-configure")
	path := freshFixture(t)
	s := newMuninSetup(t, path)
	args := []string{"--libdir", s.lib, "--servicedir", s.plugins, "--sconfdir", s.conf}

	want := suggested(t, path) // the fixture's graphs, as suffixes
	if len(want) < 20 || len(want) == len(muninplugin.Graphs()) {
		t.Fatalf("the fixture has data for %d graphs; the test wants most but not all", len(want))
	}

	stdout, stderr, err := runCmd(t, 2*time.Minute, mnc, append(args, "--suggest")...)
	if err != nil {
		t.Fatalf("munin-node-configure --suggest: %v\n%s%s", err, stdout, stderr)
	}
	// tahoe_ | no | yes (+helper_active_uploads +...)
	row := regexp.MustCompile(`(?m)^tahoe_\s+\|\s+no\s+\|\s+yes \(([^)]*)\)\s*$`).FindStringSubmatch(stdout)
	if row == nil {
		t.Fatalf("munin-node-configure --suggest does not offer tahoe_ with suggestions:\n%s%s", stdout, stderr)
	}
	var got []string
	for _, s := range strings.Fields(row[1]) {
		got = append(got, strings.TrimPrefix(s, "+"))
	}
	sort.Strings(got)
	sorted := append([]string{}, want...)
	sort.Strings(sorted)
	if strings.Join(got, " ") != strings.Join(sorted, " ") {
		t.Errorf("suggestions %v, want %v", got, sorted)
	}
	if strings.Contains(stdout+stderr, "error") || strings.Contains(stdout+stderr, "[[[") {
		t.Errorf("munin-node-configure reports problems:\n%s%s", stdout, stderr)
	}

	stdout, stderr, err = runCmd(t, 2*time.Minute, mnc, append(args, "--shell")...)
	if err != nil {
		t.Fatalf("munin-node-configure --shell: %v\n%s", err, stderr)
	}
	var links []string
	for _, l := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var from, to string
		if _, err := fmt.Sscanf(l, "ln -s %s %s", &from, &to); err != nil || from != "'"+filepath.Join(s.lib, "tahoe_")+"'" {
			t.Errorf("unexpected --shell line %q", l)
			continue
		}
		links = append(links, strings.TrimPrefix(strings.Trim(filepath.Base(strings.Trim(to, "'")), "'"), "tahoe_"))
	}
	sort.Strings(links)
	if strings.Join(links, " ") != strings.Join(sorted, " ") {
		t.Errorf("--shell links %v, want %v", links, sorted)
	}
	if stderr != "" {
		t.Errorf("--shell stderr: %s", stderr)
	}

	// With the links in place, munin-node-configure is content.
	for _, g := range want {
		if err := os.Symlink(filepath.Join(s.lib, "tahoe_"), filepath.Join(s.plugins, "tahoe_"+g)); err != nil {
			t.Fatal(err)
		}
	}
	stdout, stderr, err = runCmd(t, 2*time.Minute, mnc, append(args, "--shell", "--remove-also")...)
	if err != nil || strings.TrimSpace(stdout) != "" {
		t.Errorf("--shell --remove-also with everything linked: %v, %q %q", err, stdout, stderr)
	}
}

// freePort asks the kernel for a free TCP port on loopback.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startMuninNode runs a real munin-node on 127.0.0.1:port in a private mount
// namespace where s's plugins and plugin-conf.d are /etc/munin/plugins and
// /etc/munin/plugin-conf.d. It is killed (its whole process group) when the
// test ends.
func startMuninNode(t *testing.T, s *muninSetup) (addr string) {
	t.Helper()
	node := muninTool(t, "munin-node")
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatalf("unshare not found (util-linux): %v", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("munin-node in a private mount namespace needs root (bind mounts over /etc/munin)")
	}
	for _, d := range []string{"/etc/munin/plugins", "/etc/munin/plugin-conf.d"} {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			t.Fatalf("%s missing (is munin-node installed? run `make deps`): %v", d, err)
		}
	}
	dir := worldReadableDir(t)
	port := freePort(t)
	conf := filepath.Join(dir, "munin-node.conf")
	logFile := filepath.Join(dir, "munin-node.log")
	cfg := fmt.Sprintf(`log_level 4
log_file %s
pid_file %s
background 0
setsid 0
user root
group root
host_name capstats-test
allow ^127\.0\.0\.1$
host 127.0.0.1
port %d
`, logFile, filepath.Join(dir, "munin-node.pid"), port)
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(unshare, "--mount", "--propagation", "private", "sh", "-c",
		`mount --bind "$1" /etc/munin/plugins && mount --bind "$2" /etc/munin/plugin-conf.d && exec "$3" --config "$4"`,
		"sh", s.plugins, s.conf, node, conf)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	pgid := cmd.Process.Pid
	t.Cleanup(func() {
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-pgid, syscall.SIGKILL)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				t.Errorf("munin-node (pgid %d) did not exit", pgid)
			}
		}
		// Children forked per connection are in the group too.
		syscall.Kill(-pgid, syscall.SIGKILL)
	})
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(logFile)
			t.Fatalf("munin-node exited: %s\n%s", out.String(), log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logFile)
			t.Fatalf("munin-node did not listen on %s within 30 s: %v\n%s\n%s", addr, err, out.String(), log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// muninConn speaks munin's text protocol, every read with a deadline.
type muninConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialMunin(t *testing.T, addr string) *muninConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &muninConn{t: t, c: c, r: bufio.NewReader(c)}
}

func (m *muninConn) line() string {
	m.t.Helper()
	m.c.SetReadDeadline(time.Now().Add(70 * time.Second)) // munin-node's plugin timeout is 60 s
	l, err := m.r.ReadString('\n')
	if err != nil {
		m.t.Fatalf("munin-node: read: %v (after %q)", err, l)
	}
	return strings.TrimSuffix(l, "\n")
}

func (m *muninConn) send(cmd string) {
	m.t.Helper()
	m.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := m.c.Write([]byte(cmd + "\n")); err != nil {
		m.t.Fatalf("munin-node: write %q: %v", cmd, err)
	}
}

// block sends cmd and reads the answer up to the line ".".
func (m *muninConn) block(cmd string) string {
	m.t.Helper()
	m.send(cmd)
	var b strings.Builder
	for i := 0; ; i++ {
		l := m.line()
		if l == "." {
			return b.String()
		}
		if i > 100000 {
			m.t.Fatalf("%s: no terminating '.'", cmd)
		}
		b.WriteString(l + "\n")
	}
}

func TestMuninNode(t *testing.T) {
	path := freshFixture(t)
	s := newMuninSetup(t, path, "tahoe_storage_allocated", "tahoe_runtime_load_avg", "tahoe_multigraph")
	addr := startMuninNode(t, s)

	m := dialMunin(t, addr)
	if l := m.line(); l != "# munin node at capstats-test" {
		t.Fatalf("banner %q", l)
	}
	m.send("cap multigraph dirtyconfig")
	if l := m.line(); l != "cap multigraph dirtyconfig" {
		t.Fatalf("cap: %q", l)
	}
	m.send("list")
	if l := sortedFields(m.line()); l != "tahoe_multigraph tahoe_runtime_load_avg tahoe_storage_allocated" {
		t.Errorf("list: %q", l)
	}
	dirty := []string{"MUNIN_CAP_MULTIGRAPH=1", "MUNIN_CAP_DIRTYCONFIG=1"}
	for _, g := range []string{"tahoe_storage_allocated", "tahoe_runtime_load_avg", "tahoe_multigraph"} {
		// dirtyconfig: config carries the values too.
		if got, want := m.block("config "+g), expected(t, g, "config", path, dirty...); got != want {
			t.Errorf("config %s:\n%s\nwant\n%s", g, got, want)
		}
		if got, want := m.block("fetch "+g), expected(t, g, "", path, dirty...); got != want {
			t.Errorf("fetch %s:\n%s\nwant\n%s", g, got, want)
		}
	}
	if got := m.block("fetch tahoe_storage_allocated"); !strings.Contains(got, "old_node_o7f3.value U\n") || !strings.Contains(got, "my_storage_node_a2bz.value 5500000000000000000000\n") {
		t.Errorf("fetch tahoe_storage_allocated:\n%s", got)
	}
	m.send("quit")

	// A master without capabilities: plain config, and munin-node hides
	// the multigraph plugin (it always sets MUNIN_CAP_MULTIGRAPH=1 for
	// plugins, and recognises multigraph plugins by their "multigraph"
	// config lines at start-up).
	m2 := dialMunin(t, addr)
	m2.line()
	m2.send("list")
	if l := sortedFields(m2.line()); l != "tahoe_runtime_load_avg tahoe_storage_allocated" {
		t.Errorf("list without capabilities: %q", l)
	}
	if got, want := m2.block("config tahoe_storage_allocated"), expected(t, "tahoe_storage_allocated", "config", path); got != want {
		t.Errorf("config without dirtyconfig:\n%s\nwant\n%s", got, want)
	}
	m2.send("quit")
}

func sortedFields(s string) string {
	f := strings.Fields(s)
	sort.Strings(f)
	return strings.Join(f, " ")
}

// The install script, run the way a user would, then real munin on what it
// installed.
func TestInstallScript(t *testing.T) {
	script, err := filepath.Abs("../../scripts/install-munin.sh")
	if err != nil {
		t.Fatal(err)
	}
	path := freshFixture(t)
	root := worldReadableDir(t)
	lib, plugins, conf, binDir := filepath.Join(root, "lib"), filepath.Join(root, "plugins"), filepath.Join(root, "conf"), filepath.Join(root, "bin")
	for _, d := range []string{lib, plugins, conf, binDir} {
		os.Mkdir(d, 0o755)
	}
	// The "installed" binary: a copy this test may replace, as an upgrade does.
	bin := filepath.Join(binDir, "tahoe_stats")
	b, err := os.ReadFile(pluginBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	dirs := func(plugins string) []string {
		return []string{"--lib-dir", lib, "--plugins-dir", plugins, "--conf-dir", conf}
	}
	installIn := func(plugins, statsFile string, extra ...string) string {
		t.Helper()
		args := append(dirs(plugins), append([]string{"--statsfile", statsFile, "--bin", bin}, extra...)...)
		stdout, stderr, err := runCmd(t, time.Minute, script, args...)
		if err != nil {
			t.Fatalf("install-munin.sh %v: %v\n%s%s", extra, err, stdout, stderr)
		}
		return stdout + stderr
	}
	install := func(extra ...string) string { t.Helper(); return installIn(plugins, path, extra...) }
	uninstall := func() string {
		t.Helper()
		stdout, stderr, err := runCmd(t, time.Minute, script, append(dirs(plugins), "--uninstall")...)
		if err != nil {
			t.Fatalf("install-munin.sh --uninstall: %v\n%s%s", err, stdout, stderr)
		}
		return stdout + stderr
	}
	linkedIn := func(dir string) []string {
		t.Helper()
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return names
	}
	linked := func() []string { t.Helper(); return linkedIn(plugins) }
	// hinted checks that the closing hint names a graph that is in dir.
	hinted := func(out, dir string) {
		t.Helper()
		m := regexp.MustCompile(`Check with: munin-run (\S+) config`).FindStringSubmatch(out)
		if m == nil {
			t.Errorf("no closing hint naming a graph:\n%s", out)
			return
		}
		if _, err := os.Lstat(filepath.Join(dir, m[1])); err != nil {
			t.Errorf("the closing hint names %s, which is not linked: %v\n%s", m[1], err, out)
		}
	}
	var withData []string
	for _, suffix := range suggested(t, path) {
		withData = append(withData, muninplugin.Prefix+suffix)
	}
	sort.Strings(withData)
	all := append([]string{}, muninplugin.GraphNames()...)
	sort.Strings(all)
	if len(withData) == 0 || len(withData) == len(all) {
		t.Fatalf("the fixture has data for %d of %d graphs; the test wants some but not all", len(withData), len(all))
	}

	// By default: every graph, the library entry a link to the binary.
	out := install()
	for _, w := range []string{"linked: " + filepath.Join(lib, "tahoe_") + " -> " + bin, "wrote: " + filepath.Join(conf, "tahoe_stats"), "linked: " + filepath.Join(plugins, "tahoe_storage_allocated"), "restart munin-node"} {
		if !strings.Contains(out, w) {
			t.Errorf("first install does not say %q:\n%s", w, out)
		}
	}
	hinted(out, plugins)
	if got := linked(); strings.Join(got, " ") != strings.Join(all, " ") {
		t.Errorf("linked %v, want all %v", got, all)
	}
	if target, _ := os.Readlink(filepath.Join(plugins, "tahoe_storage_allocated")); target != filepath.Join(lib, "tahoe_") {
		t.Errorf("link target %q", target)
	}
	if target, err := os.Readlink(filepath.Join(lib, "tahoe_")); err != nil || target != bin {
		t.Errorf("%s is not a link to %s: %q %v", filepath.Join(lib, "tahoe_"), bin, target, err)
	}
	confText, _ := os.ReadFile(filepath.Join(conf, "tahoe_stats"))
	if !strings.Contains(string(confText), "[tahoe_*]\nenv.statsfile "+path+"\n") {
		t.Errorf("conf file:\n%s", confText)
	}
	// Idempotent.
	out = install()
	if strings.Contains(out, "installed:") || strings.Contains(out, "linked:") || strings.Contains(out, "wrote:") || strings.Contains(out, "removed:") {
		t.Errorf("second run changed something:\n%s", out)
	}
	hinted(out, plugins)

	// --uninstall removes it all; then --only-with-data links what has data.
	out = uninstall()
	if got := linked(); len(got) != 0 {
		t.Errorf("--uninstall left %v:\n%s", got, out)
	}
	for _, p := range []string{filepath.Join(lib, "tahoe_"), filepath.Join(conf, "tahoe_stats")} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("--uninstall left %s:\n%s", p, out)
		}
	}
	if _, err := os.Stat(bin); err != nil {
		t.Errorf("--uninstall removed the binary: %v", err)
	}
	out = install("--only-with-data")
	if got := linked(); strings.Join(got, " ") != strings.Join(withData, " ") {
		t.Errorf("--only-with-data linked %v, want %v", got, withData)
	}
	hinted(out, plugins)
	// A stats file without data yet: nothing linked, and the hint says so
	// rather than naming a graph that is not there.
	empty := filepath.Join(root, "empty.json")
	os.WriteFile(empty, []byte("{}\n"), 0o644)
	emptyPlugins := filepath.Join(root, "plugins-empty")
	os.Mkdir(emptyPlugins, 0o755)
	out = installIn(emptyPlugins, empty, "--only-with-data")
	if got := linkedIn(emptyPlugins); len(got) != 0 || strings.Contains(out, "Check with: munin-run") || !strings.Contains(out, "No graph is linked yet") {
		t.Errorf("--only-with-data on an empty stats file: linked %v:\n%s", got, out)
	}
	os.RemoveAll(emptyPlugins)
	install() // the conf file back to the fixture

	// --all, then --multigraph (which replaces the links), then back.
	install("--all")
	if got := linked(); len(got) != len(all) {
		t.Errorf("--all linked %d graphs, want %d", len(got), len(all))
	}
	out = install("--multigraph")
	if got := linked(); strings.Join(got, " ") != "tahoe_multigraph" {
		t.Errorf("--multigraph left %v", got)
	}
	hinted(out, plugins)
	if target, err := os.Readlink(filepath.Join(plugins, "tahoe_multigraph")); err != nil || target != bin {
		t.Errorf("tahoe_multigraph is not a link to the binary: %q %v", target, err)
	}
	if out := install("--multigraph"); strings.Contains(out, "linked: "+filepath.Join(plugins, "tahoe_multigraph")) {
		t.Errorf("second --multigraph relinked:\n%s", out)
	}
	install()
	if got := linked(); strings.Join(got, " ") != strings.Join(all, " ") { // tahoe_multigraph goes, the graphs come back
		t.Errorf("after switching back: %v", got)
	}
	// What older versions installed, copies of the binary, become links.
	os.Remove(filepath.Join(lib, "tahoe_"))
	os.WriteFile(filepath.Join(lib, "tahoe_"), b, 0o755)
	if out := install(); !strings.Contains(out, "linked: "+filepath.Join(lib, "tahoe_")) {
		t.Errorf("a copied tahoe_ was not replaced by a link:\n%s", out)
	}
	// Someone else's file is left alone, by install and by --uninstall.
	os.Remove(filepath.Join(plugins, "tahoe_storage_allocated"))
	os.WriteFile(filepath.Join(plugins, "tahoe_storage_allocated"), []byte("#!/bin/sh\n"), 0o755)
	if out := install(); !strings.Contains(out, "skipped: "+filepath.Join(plugins, "tahoe_storage_allocated")) {
		t.Errorf("a foreign file was not skipped:\n%s", out)
	}
	if b, _ := os.ReadFile(filepath.Join(plugins, "tahoe_storage_allocated")); string(b) != "#!/bin/sh\n" {
		t.Error("a foreign file was overwritten")
	}
	// --user goes into the conf file.
	install("--user", "nobody")
	if confText, _ := os.ReadFile(filepath.Join(conf, "tahoe_stats")); !strings.HasSuffix(string(confText), "\nenv.statsfile "+path+"\nuser nobody\n") {
		t.Errorf("conf file with --user:\n%s", confText)
	}
	// A conf file the script did not write (the Debian package's conffile,
	// an operator's own) is kept.
	own := "# mine\n[tahoe_*]\nenv.statsfile " + path + "\n"
	os.WriteFile(filepath.Join(conf, "tahoe_stats"), []byte(own), 0o644)
	if out := install(); !strings.Contains(out, "kept: "+filepath.Join(conf, "tahoe_stats")) {
		t.Errorf("an operator's conf file was not kept:\n%s", out)
	}
	out = uninstall()
	if b, _ := os.ReadFile(filepath.Join(conf, "tahoe_stats")); string(b) != own {
		t.Errorf("an operator's conf file was changed: %q\n%s", b, out)
	}
	if got := linked(); strings.Join(got, " ") != "tahoe_storage_allocated" {
		t.Errorf("--uninstall left %v, want only the foreign tahoe_storage_allocated", got)
	}
	os.Remove(filepath.Join(conf, "tahoe_stats"))
	os.Remove(filepath.Join(plugins, "tahoe_storage_allocated"))

	// Bad usage.
	if _, stderr, err := runCmd(t, time.Minute, script, append(dirs(plugins), "--lib-dir", lib)...); err == nil || !strings.Contains(stderr, "--statsfile PATH is required") {
		t.Errorf("missing --statsfile: %v %q", err, stderr)
	}
	for _, pair := range [][]string{{"--all", "--multigraph"}, {"--only-with-data", "--multigraph"}, {"--only-with-data", "--all"}, {"--uninstall", "--multigraph"}} {
		if _, stderr, err := runCmd(t, time.Minute, script, append(dirs(plugins), "--statsfile", path, pair[0], pair[1])...); err == nil || !strings.Contains(stderr, "exclude each other") {
			t.Errorf("%v: %v %q", pair, err, stderr)
		}
	}

	// munin-run on what the script installed (its conf file has no "user"
	// line: munin-run runs the plugin as nobody, which can read the
	// fixture in its 0755 dir).
	muninRun := muninTool(t, "munin-run")
	install()
	stdout, stderr, err := runCmd(t, time.Minute, muninRun, "--servicedir", plugins, "--sconfdir", conf, "tahoe_storage_allocated")
	if err != nil || stdout != expected(t, "tahoe_storage_allocated", "", path) {
		t.Errorf("munin-run after install: %v\n%s%s", err, stdout, stderr)
	}
	// An upgrade replaces the binary; the plugins run the new one with no
	// re-run of the script.
	tmp := bin + ".new"
	os.WriteFile(tmp, []byte("#!/bin/sh\necho upgraded.value 1\n"), 0o755)
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err = runCmd(t, time.Minute, muninRun, "--servicedir", plugins, "--sconfdir", conf, "tahoe_storage_allocated")
	if err != nil || stdout != "upgraded.value 1\n" {
		t.Errorf("munin-run after the binary was replaced: %v\n%s%s", err, stdout, stderr)
	}
}

// benchFile is a stats file of n nodes with 20 counters and 20 stats each.
func benchFile(n int) *statsfile.File {
	f := &statsfile.File{}
	now := float64(time.Now().Unix())
	for i := 0; i < n; i++ {
		c, s := stats.Map{}, stats.Map{}
		for j, g := range muninplugin.Graphs()[:20] {
			if g.Category == "counters" {
				c[g.StatID] = stats.Int(int64(i*1000 + j))
			} else {
				s[g.StatID] = stats.Float(float64(i) / float64(j+7))
			}
		}
		for j := len(c); j < 20; j++ {
			c[fmt.Sprintf("extra.counter_%d", j)] = stats.Int(int64(j))
		}
		for j := len(s); j < 20; j++ {
			s[fmt.Sprintf("extra.stat_%d", j)] = stats.Float(float64(j) / 3)
		}
		f.Nodes = append(f.Nodes, statsfile.Node{
			TubID: fmt.Sprintf("%032d", i), Nickname: fmt.Sprintf("storage node %d", i), Timestamp: now,
			Stats: stats.Snapshot{Counters: stats.SetOf(c), Stats: stats.SetOf(s)}, Up: true, LastPoll: now,
		})
	}
	return f
}

// suggested is what the plugin answers munin's "suggest" with for the
// stats file at path: the suffixes of the graphs that have data.
func suggested(t *testing.T, path string) []string {
	t.Helper()
	var out bytes.Buffer
	p := muninplugin.Plugin{Name: muninplugin.Prefix, StatsFile: path, Stdout: &out}
	if err := p.Run("suggest"); err != nil {
		t.Fatal(err)
	}
	return strings.Fields(out.String())
}
