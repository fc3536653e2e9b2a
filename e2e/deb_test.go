package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"capstats/internal/testbin"
	"capstats/internal/testutil"
	"capstats/statsfile"
)

// debTestMaintainer marks the packages this test builds, so that one left
// installed by a killed run is recognised (and purged) by the next.
const debTestMaintainer = "capstats e2e test <capstats-e2e@example.org>"

// TestDebianPackage builds the .deb with `make deb`, checks it with
// lintian, installs it with dpkg, runs the units' ExecStart commands as the
// capstats user, upgrades it, removes it (data kept) and purges it (data
// and user gone). It changes the machine (/usr/bin, /etc, /var/lib, the
// user list), so it runs only as root, one run at a time, and purges the
// package whatever happens.
func TestDebianPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and installs the .deb (-short)")
	}
	if os.Geteuid() != 0 {
		t.Skip("skipped: installs the .deb with dpkg and runs it as the capstats user, so it runs only as root (as in CI)")
	}
	for _, tool := range []string{"dpkg", "dpkg-deb", "lintian", "setpriv", "runuser", "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run `make deps` (scripts/ensure-deps.sh)", tool)
		}
	}
	lockDebTest(t)
	began := time.Now()
	step := func(what string) { t.Logf("%5.1fs %s", time.Since(began).Seconds(), what) }

	if st := dpkgQuery("${Status}"); strings.Contains(st, "installed") || strings.Contains(st, "config-files") {
		if m := dpkgQuery("${Maintainer}"); m != debTestMaintainer {
			t.Skipf("skipped: a capstats package (%q) is installed on this machine; this test would replace and purge it", m)
		}
		t.Log("purging a capstats package left by an earlier run of this test")
		exec.Command("dpkg", "--purge", "capstats").Run()
	}
	if _, err := user.Lookup("capstats"); err == nil {
		t.Skip("skipped: the user capstats exists without the package; purging would delete it")
	}
	if _, err := os.Stat("/var/lib/capstats"); err == nil {
		t.Skip("skipped: /var/lib/capstats exists without the package; purging would delete it")
	}

	// Build the one make deb makes, and for the upgrade the same package
	// with a later version.
	out := t.TempDir()
	deb := makeDeb(t, filepath.Join(out, "1"))
	version := strings.Split(filepath.Base(deb), "_")[1]
	deb2 := filepath.Join(out, "upgrade.deb")
	tree := filepath.Join(out, "tree")
	if r := run(t, 5*time.Minute, "dpkg-deb", "--raw-extract", deb, tree); r.err != nil {
		t.Fatalf("dpkg-deb --raw-extract: %v\n%s", r.err, r.out)
	}
	control := filepath.Join(tree, "DEBIAN", "control")
	b, err := os.ReadFile(control)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(control, []byte(strings.Replace(string(b), "\nVersion: "+version+"\n", "\nVersion: "+version+"+1\n", 1)), 0o644)
	if r := run(t, 5*time.Minute, "dpkg-deb", "--root-owner-group", "-Zgzip", "--build", tree, deb2); r.err != nil {
		t.Fatalf("dpkg-deb --build: %v\n%s", r.err, r.out)
	}

	step("built")
	lint := run(t, 5*time.Minute, "lintian", "--fail-on", "error", deb)
	if lint.err != nil {
		t.Fatalf("lintian reports errors: %v\n%s", lint.err, lint.out)
	}
	t.Logf("lintian:\n%s", lint.out)
	contents := run(t, time.Minute, "dpkg-deb", "--contents", deb).out
	for _, want := range []string{
		"./usr/bin/gatherer", "./usr/bin/capstats-node", "./usr/bin/tahoe_stats",
		"./usr/lib/systemd/system/capstats-gatherer.service", "./usr/lib/systemd/system/capstats-node.service",
		"./usr/share/munin/plugins/tahoe_ -> ../../../bin/tahoe_stats", "./etc/munin/plugin-conf.d/tahoe_stats",
		"./usr/share/man/man1/gatherer.1.gz", "./usr/share/man/man1/capstats-node.1.gz", "./usr/share/man/man1/tahoe_stats.1.gz",
		"./usr/sbin/capstats-install-munin", "./usr/share/doc/capstats/copyright",
	} {
		if !strings.Contains(contents, " "+want+"\n") {
			t.Errorf("the .deb lacks %s:\n%s", want, contents)
		}
	}
	if strings.Contains(contents, "./var/lib/capstats") {
		t.Errorf("the .deb ships /var/lib/capstats (the postinst makes it, so that remove keeps the data):\n%s", contents)
	}

	// Install; purge at the end whatever happens.
	var munLink string
	t.Cleanup(func() {
		exec.Command("dpkg", "--purge", "capstats").Run()
		if munLink != "" {
			os.Remove(munLink)
		}
		if _, err := user.Lookup("capstats"); err == nil {
			exec.Command("userdel", "capstats").Run()
		}
		if _, err := user.LookupGroup("capstats"); err == nil {
			exec.Command("groupdel", "capstats").Run()
		}
	})
	step("linted")
	mustDpkg(t, "-i", deb)

	u, err := user.Lookup("capstats")
	if err != nil {
		t.Fatalf("the postinst did not create the user capstats: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	if uid == 0 || uid >= 1000 {
		t.Errorf("capstats has uid %d, want a system user (1-999)", uid)
	}
	if u.HomeDir != "/var/lib/capstats" {
		t.Errorf("capstats's home is %s", u.HomeDir)
	}
	for _, d := range []string{"/var/lib/capstats/gatherer", "/var/lib/capstats/node"} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatalf("the postinst did not create %s: %v", d, err)
		}
		if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != uid || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: owner %d mode %o, want capstats (%d) 0700", d, st.Uid, fi.Mode().Perm(), uid)
		}
	}
	if b, err := os.ReadFile("/usr/share/doc/capstats/copyright"); err != nil || !strings.Contains(string(b), "Files: linked Go module github.com/alecthomas/kong ") || !strings.Contains(string(b), "Files: the Go runtime and standard library") {
		t.Errorf("the copyright file does not list the linked modules and Go: %v\n%s", err, b)
	}
	if conff := dpkgQuery("${Conffiles}"); !strings.Contains(conff, "/etc/munin/plugin-conf.d/tahoe_stats") || !strings.Contains(conff, "/etc/default/capstats-gatherer") {
		t.Errorf("conffiles: %q", conff)
	}
	for _, b := range []string{"gatherer", "capstats-node", "tahoe_stats"} {
		if r := run(t, time.Minute, "/usr/bin/"+b, "--version"); r.err != nil || !strings.HasPrefix(r.out, b+" ") {
			t.Errorf("/usr/bin/%s --version: %v %q", b, r.err, r.out)
		}
	}
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		for _, unit := range []string{"capstats-gatherer.service", "capstats-node.service"} {
			if r := run(t, time.Minute, "systemd-analyze", "verify", "/usr/lib/systemd/system/"+unit); r.err != nil || strings.TrimSpace(r.out) != "" {
				t.Errorf("systemd-analyze verify %s: %v\n%s", unit, r.err, r.out)
			}
		}
	}

	step("installed")
	// The operator's setup (README.Debian), then the units' commands.
	port := freeTCPPort(t)
	gdir, ndir := "/var/lib/capstats/gatherer", "/var/lib/capstats/node"
	if r := run(t, time.Minute, "runuser", "-u", "capstats", "--", "gatherer", "create", "--basedir", gdir,
		"--location", fmt.Sprintf("tcp:127.0.0.1:%d", port), "--port", fmt.Sprintf("tcp:%d:interface=127.0.0.1", port)); r.err != nil {
		t.Fatalf("runuser -u capstats -- gatherer create: %v\n%s", r.err, r.out)
	}
	const opts = "GATHERER_OPTS=\"--interval 1s\"\n"
	appendFile(t, "/etc/default/capstats-gatherer", "# changed by the e2e test\n"+opts)
	g := startUnit(t, "capstats-gatherer.service")
	furlPath := filepath.Join(gdir, "stats_gatherer.furl")
	testutil.WaitFor(t, "the gatherer's furl file", 30*time.Second, func() bool { _, err := os.Stat(furlPath); return err == nil })
	furl, err := os.ReadFile(furlPath)
	if err != nil {
		t.Fatal(err)
	}
	if r := run(t, time.Minute, "install", "-m", "0600", "-o", "capstats", "-g", "capstats", furlPath, ndir+"/"); r.err != nil {
		t.Fatalf("install the furl: %v\n%s", r.err, r.out)
	}
	n := startUnit(t, "capstats-node.service")
	host, _ := os.Hostname()
	statsPath := filepath.Join(gdir, "stats.json")
	testutil.WaitFor(t, "the node, run as capstats, up in stats.json", 60*time.Second, func() bool {
		f, err := statsfile.Load(statsPath)
		if err != nil {
			return false
		}
		for _, nd := range f.Nodes {
			if nd.Up && nd.Nickname == host && nd.Timestamp > 0 {
				return true
			}
		}
		return false
	})
	step("node up")
	for _, p := range []string{statsPath, filepath.Join(ndir, "private", "node.pem")} {
		if fi, err := os.Stat(p); err != nil || int(fi.Sys().(*syscall.Stat_t).Uid) != uid {
			t.Errorf("%s is not owned by capstats: %v", p, err)
		}
	}

	// munin: the packaged plugin and conffile (user capstats reads the 0700
	// basedir), graphs linked by the packaged script into a dir of ours.
	// World-readable: munin-run execs the links as capstats.
	plugins, err := os.MkdirTemp("", "capstats-deb-plugins-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(plugins) })
	os.Chmod(plugins, 0o755)
	if _, err := os.Stat("/usr/share/munin/plugins"); err == nil {
		r := run(t, time.Minute, "capstats-install-munin", "--statsfile", statsPath, "--plugins-dir", plugins, "--bin", "/usr/bin/tahoe_stats")
		for _, want := range []string{"kept: /usr/share/munin/plugins/tahoe_", "kept: /etc/munin/plugin-conf.d/tahoe_stats", "Check with: munin-run tahoe_"} {
			if r.err != nil || !strings.Contains(r.out, want) {
				t.Errorf("capstats-install-munin: %v, output lacks %q:\n%s", r.err, want, r.out)
			}
		}
		r = run(t, time.Minute, "munin-run", "--servicedir", plugins, "tahoe_runtime_load_avg")
		if r.err != nil || !regexp.MustCompile(`(?m)^\S+\.value [0-9.]+$`).MatchString(r.out) {
			t.Errorf("munin-run tahoe_runtime_load_avg as capstats: %v\n%s", r.err, r.out)
		}
		munLink = "/etc/munin/plugins/tahoe_capstats_e2e_test"
		os.Remove(munLink)
		if err := os.Symlink("/usr/share/munin/plugins/tahoe_", munLink); err != nil {
			t.Fatal(err)
		}
	} else {
		t.Errorf("no /usr/share/munin/plugins: run `make deps` (munin-node)")
	}
	step("munin done")
	g.signal(t, syscall.SIGTERM)
	n.signal(t, syscall.SIGTERM)

	// Upgrade: the changed conffile, the data and the user stay.
	mustDpkg(t, "-i", deb2)
	if b, _ := os.ReadFile("/etc/default/capstats-gatherer"); !strings.Contains(string(b), opts) {
		t.Errorf("the upgrade overwrote the changed /etc/default/capstats-gatherer:\n%s", b)
	}
	if b, _ := os.ReadFile(furlPath); string(b) != string(furl) {
		t.Errorf("the upgrade changed the furl file")
	}
	if u2, err := user.Lookup("capstats"); err != nil || u2.Uid != u.Uid {
		t.Errorf("after the upgrade capstats is %v (%v), was uid %s", u2, err, u.Uid)
	}
	if v := dpkgQuery("${Version}"); v != version+"+1" {
		t.Errorf("installed version after the upgrade: %q", v)
	}

	step("upgraded")
	// Remove: binaries go; data, conffiles and user stay.
	mustDpkg(t, "--remove", "capstats")
	for _, gone := range []string{"/usr/bin/gatherer", "/usr/bin/capstats-node", "/usr/bin/tahoe_stats", "/usr/share/munin/plugins/tahoe_"} {
		if _, err := os.Lstat(gone); err == nil {
			t.Errorf("dpkg --remove left %s", gone)
		}
	}
	for _, kept := range []string{statsPath, furlPath, filepath.Join(ndir, "private", "node.pem"), "/etc/default/capstats-gatherer"} {
		if _, err := os.Stat(kept); err != nil {
			t.Errorf("dpkg --remove removed %s (policy: remove keeps data and configuration): %v", kept, err)
		}
	}
	if _, err := user.Lookup("capstats"); err != nil {
		t.Errorf("dpkg --remove removed the user: %v", err)
	}

	step("removed")
	// Purge: data, configuration, munin's links and the user go.
	mustDpkg(t, "--purge", "capstats")
	for _, gone := range []string{"/var/lib/capstats", "/etc/default/capstats-gatherer", "/etc/default/capstats-node", "/etc/munin/plugin-conf.d/tahoe_stats", munLink} {
		if gone == "" {
			continue
		}
		if _, err := os.Lstat(gone); err == nil {
			t.Errorf("dpkg --purge left %s", gone)
		}
	}
	if _, err := user.Lookup("capstats"); err == nil {
		t.Errorf("dpkg --purge left the user capstats")
	}
	if _, err := user.LookupGroup("capstats"); err == nil {
		t.Errorf("dpkg --purge left the group capstats")
	}
}

// lockDebTest makes concurrent runs of TestDebianPackage (two go test
// processes) take turns: both install the same package.
func lockDebTest(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "capstats-deb-test.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	deadline := time.Now().Add(15 * time.Minute)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			t.Fatalf("lock %s: %v", f.Name(), err)
		}
		time.Sleep(time.Second)
	}
}

type result struct {
	out string
	err error
}

// run runs a command with a deadline and returns its combined output.
func run(t *testing.T, timeout time.Duration, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	b, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v", timeout)
	}
	return result{string(b), err}
}

func makeDeb(t *testing.T, dir string) string {
	t.Helper()
	args := []string{"deb", "DEB_OUT=" + dir, "DEB_MAINTAINER=" + debTestMaintainer}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", args...)
	cmd.Dir = testbin.Root(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make %v: %v\n%s", args, err, b)
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "capstats_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %v in %s, want one capstats_*.deb", debs, dir)
	}
	return debs[0]
}

func dpkgQuery(field string) string {
	b, _ := exec.Command("dpkg-query", "-W", "-f", field, "capstats").Output()
	return strings.TrimSpace(string(b))
}

func mustDpkg(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "dpkg", args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dpkg %v: %v\n%s", args, err, b)
	}
}

func appendFile(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

// unit is what startUnit reads from a systemd unit's [Service] section.
type unit struct {
	user, group, umask, execStart, envFile string
}

func readUnit(t *testing.T, path string) unit {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var u unit
	section := ""
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "[") {
			section = l
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok || section != "[Service]" {
			continue
		}
		switch k {
		case "User":
			u.user = v
		case "Group":
			u.group = v
		case "UMask":
			u.umask = v
		case "ExecStart":
			u.execStart = v
		case "EnvironmentFile":
			u.envFile = strings.TrimPrefix(v, "-")
		}
	}
	if u.user == "" || u.execStart == "" {
		t.Fatalf("%s: no User= or ExecStart=", path)
	}
	return u
}

// envFile reads KEY=VALUE lines as systemd's EnvironmentFile= does (for
// the simple quoting the packaged files use).
func envFile(t *testing.T, path string) map[string]string {
	t.Helper()
	env := map[string]string{}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("%s: bad line %q", path, l)
		}
		env[k] = strings.Trim(v, `"`)
	}
	return env
}

// startUnit runs an installed unit's ExecStart the way systemd would
// (specifiers and $VARS from its EnvironmentFile expanded, as its User and
// Group, with its UMask and no new privileges), without systemd.
func startUnit(t *testing.T, name string) *proc {
	t.Helper()
	u := readUnit(t, "/usr/lib/systemd/system/"+name)
	env := map[string]string{}
	if u.envFile != "" {
		env = envFile(t, u.envFile)
	}
	host, _ := os.Hostname()
	var argv []string
	for _, w := range strings.Fields(u.execStart) {
		if strings.HasPrefix(w, "$") {
			argv = append(argv, strings.Fields(env[w[1:]])...)
			continue
		}
		argv = append(argv, strings.NewReplacer("%H", host, "%%", "%").Replace(w))
	}
	umask := u.umask
	if umask == "" {
		umask = "0022"
	}
	args := []string{"--reuid=" + u.user, "--regid=" + u.group, "--init-groups", "--no-new-privs", "--",
		"sh", "-c", `umask "$0" && exec "$@"`, umask}
	return start(t, "setpriv", append(args, argv...)...)
}
