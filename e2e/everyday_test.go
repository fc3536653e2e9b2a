package e2e

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"capstats/capnp/tub"
	"capstats/internal/testbin"
	"capstats/internal/testutil"
	"capstats/statsfile"
)

// The everyday tasks of README's "Everyday tasks", each run with the real
// binaries as an operator would.

type grid struct {
	t        *testing.T
	gbin     string
	nbin     string
	work     string
	gdir     string
	statsPth string
	g        *proc
}

func newGrid(t *testing.T) *grid {
	if testing.Short() {
		t.Skip("runs the real commands")
	}
	work := t.TempDir()
	gr := &grid{t: t, gbin: testbin.Build(t, "gatherer"), nbin: testbin.Build(t, "capstats-node"), work: work,
		gdir: filepath.Join(work, "gatherer")}
	gr.statsPth = filepath.Join(gr.gdir, "stats.json")
	mustRun(t, nil, gr.gbin, "create", "--basedir", gr.gdir, "--hostname", "127.0.0.1")
	return gr
}

// run starts the gatherer and waits until it answers on its control socket.
func (gr *grid) run(args ...string) *proc {
	gr.t.Helper()
	gr.g = start(gr.t, gr.gbin, append([]string{"run", "--basedir", gr.gdir}, args...)...)
	testutil.WaitFor(gr.t, "the gatherer to run", 20*time.Second, func() bool {
		out, _ := exec.Command(gr.gbin, "status", "--basedir", gr.gdir).CombinedOutput()
		return strings.HasPrefix(string(out), "gatherer: running")
	})
	return gr.g
}

func (gr *grid) furl() string {
	gr.t.Helper()
	b, err := os.ReadFile(filepath.Join(gr.gdir, "stats_gatherer.furl"))
	if err != nil {
		gr.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// giveFurl writes furl into a node's basedir, as an operator does.
func giveFurl(t *testing.T, dir, furl string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "stats_gatherer.furl"), []byte(furl+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

type nodeProc struct {
	*proc
	dir, nick, id string
}

func (gr *grid) node(nick, furl string) *nodeProc {
	gr.t.Helper()
	dir := filepath.Join(gr.work, nick)
	os.MkdirAll(dir, 0o700)
	giveFurl(gr.t, dir, furl)
	p := start(gr.t, gr.nbin, "--basedir", dir, "--nickname", nick)
	return &nodeProc{proc: p, dir: dir, nick: nick, id: nodeTubID(gr.t, p)}
}

func (gr *grid) status() string {
	gr.t.Helper()
	return mustRun(gr.t, nil, gr.gbin, "status", "--basedir", gr.gdir)
}

// row returns the fields of the status line of the node with tub ID id,
// nil if there is none.
func row(status, id string) []string {
	for _, line := range strings.Split(status, "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[1] == id {
			return f
		}
	}
	return nil
}

func statsEntry(path, id string) (statsfile.Node, bool) {
	f, err := statsfile.Load(path)
	if err != nil {
		return statsfile.Node{}, false
	}
	for _, n := range f.Nodes {
		if n.TubID == id {
			return n, true
		}
	}
	return statsfile.Node{}, false
}

func TestEverydayForgetWhileRunning(t *testing.T) {
	gr := newGrid(t)
	gr.run("--interval", "1s")
	alpha, beta := gr.node("alpha", gr.furl()), gr.node("beta", gr.furl())
	began := time.Now()
	testutil.WaitFor(t, "both nodes in stats.json", 30*time.Second, func() bool { return fresh(gr.statsPth, began, alpha.id, beta.id) })

	cmd := exec.Command(gr.gbin, "forget", "--basedir", gr.gdir, "beta")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "is connected") {
		t.Fatalf("forget of a connected node: %v\n%s", err, out)
	}
	beta.signal(t, syscall.SIGTERM) // decommissioned
	testutil.WaitFor(t, "beta down in status", 20*time.Second, func() bool {
		r := row(gr.status(), beta.id)
		return r != nil && r[2] == "no"
	})
	out := mustRun(t, nil, gr.gbin, "forget", "--basedir", gr.gdir, "beta")
	for _, want := range []string{beta.id, "running gatherer", "rm /var/lib/munin/*/*-tahoe_*-beta_" + beta.id[:4] + "-[gd].rrd"} {
		if !strings.Contains(out, want) {
			t.Errorf("forget output lacks %q:\n%s", want, out)
		}
	}
	if _, ok := statsEntry(gr.statsPth, beta.id); ok {
		t.Fatal("stats.json still holds beta right after forget")
	}
	// The running gatherer does not undo it: rounds go on without beta.
	forgot := time.Now()
	testutil.WaitFor(t, "three more rounds", 30*time.Second, func() bool {
		n, ok := statsEntry(gr.statsPth, alpha.id)
		return ok && n.Timestamp > float64(forgot.Add(3*time.Second).UnixNano())/1e9
	})
	if _, ok := statsEntry(gr.statsPth, beta.id); ok {
		t.Fatal("beta came back in stats.json")
	}
	if r := row(gr.status(), beta.id); r != nil {
		t.Errorf("status still lists beta: %v", r)
	}
	// Nor does a restart.
	gr.g.signal(t, syscall.SIGTERM)
	gr.run("--interval", "1s")
	restarted := time.Now()
	testutil.WaitFor(t, "alpha back", 30*time.Second, func() bool { return fresh(gr.statsPth, restarted, alpha.id) })
	if _, ok := statsEntry(gr.statsPth, beta.id); ok {
		t.Fatal("beta came back after a restart")
	}
}

func TestEverydayRotateFurl(t *testing.T) {
	gr := newGrid(t)
	g := gr.run("--interval", "1s")
	old := gr.furl()
	kept, cut := gr.node("kept", old), gr.node("cut", old)
	began := time.Now()
	testutil.WaitFor(t, "both nodes in stats.json", 30*time.Second, func() bool { return fresh(gr.statsPth, began, kept.id, cut.id) })

	out := mustRun(t, nil, gr.gbin, "rotate-furl", "--basedir", gr.gdir)
	newFurl := strings.SplitN(out, "\n", 2)[0]
	of, err1 := tub.ParseFurl(old)
	nf, err2 := tub.ParseFurl(newFurl)
	if err1 != nil || err2 != nil || nf.TubID != of.TubID || nf.Swissnum == of.Swissnum {
		t.Fatalf("rotate-furl printed %q (was %s): want the same tub ID, a new swiss number\n%s", newFurl, old, out)
	}
	if gr.furl() != newFurl {
		t.Errorf("furl file %s, printed %s", gr.furl(), newFurl)
	}
	if !strings.Contains(out, "refuses the old furl") || !strings.Contains(out, "stats_gatherer.furl") {
		t.Errorf("rotate-furl does not say what happens and what to do on the nodes:\n%s", out)
	}
	// Both are cut off, and status says why.
	testutil.WaitFor(t, "both down with the reason", 20*time.Second, func() bool {
		st := gr.status()
		for _, id := range []string{kept.id, cut.id} {
			if r := row(st, id); r == nil || r[2] != "no" || !strings.Contains(strings.Join(r, " "), "rotated") {
				return false
			}
		}
		return true
	})
	rotated := time.Now()
	giveFurl(t, kept.dir, newFurl)
	testutil.WaitFor(t, "the node with the new furl back", 30*time.Second, func() bool { return fresh(gr.statsPth, rotated, kept.id) })
	// The node with the old furl is refused: the gatherer names it.
	testutil.WaitFor(t, "the old furl refused", 30*time.Second, func() bool {
		s := g.out.String()
		return strings.Contains(s, "unknown swiss number") && strings.Contains(s, "peer="+cut.id)
	})
	if n, _ := statsEntry(gr.statsPth, cut.id); n.Up || n.Timestamp > float64(rotated.UnixNano())/1e9 {
		t.Errorf("the node with the old furl answered after the rotation: %+v", n)
	}
	// Also after a restart.
	g.signal(t, syscall.SIGTERM)
	g = gr.run("--interval", "1s")
	if gr.furl() != newFurl {
		t.Errorf("furl after a restart %s, want %s", gr.furl(), newFurl)
	}
	// The refused node may be deep in its backoff by now (it has been
	// refused since the rotation, longer on a busy machine): SIGHUP makes
	// it retry at once, so that the bound below is one to give up by.
	cut.cmd.Process.Signal(syscall.SIGHUP)
	testutil.WaitFor(t, "the old furl refused after the restart", 60*time.Second, func() bool {
		return strings.Contains(g.out.String(), "peer="+cut.id)
	})
	restarted := time.Now()
	testutil.WaitFor(t, "the node with the new furl back after the restart", 30*time.Second, func() bool { return fresh(gr.statsPth, restarted, kept.id) })
	if n, _ := statsEntry(gr.statsPth, cut.id); n.Up {
		t.Errorf("the node with the old furl is up after the restart")
	}
}

func TestEverydayMoveToAnotherPort(t *testing.T) {
	gr := newGrid(t)
	gr.run("--interval", "1s")
	old := gr.furl()
	a, b := gr.node("a", old), gr.node("b", old)
	began := time.Now()
	testutil.WaitFor(t, "both nodes in stats.json", 30*time.Second, func() bool { return fresh(gr.statsPth, began, a.id, b.id) })

	port := strconv.Itoa(freeTCPPort(t))
	out := mustRun(t, nil, gr.gbin, "set-location", "--basedir", gr.gdir,
		"--location", "tcp:127.0.0.1:"+port, "--port", "tcp:"+port+":interface=127.0.0.1")
	if !strings.Contains(out, "restart") {
		t.Errorf("set-location does not say the gatherer moves when restarted:\n%s", out)
	}
	for file, want := range map[string]string{"port": "tcp:" + port + ":interface=127.0.0.1", "location": "tcp:127.0.0.1:" + port} {
		if b, _ := os.ReadFile(filepath.Join(gr.gdir, file)); strings.TrimSpace(string(b)) != want {
			t.Errorf("%s file %q, want %q", file, b, want)
		}
	}
	gr.g.signal(t, syscall.SIGTERM)
	gr.run("--interval", "1s")
	moved := gr.furl()
	of, _ := tub.ParseFurl(old)
	mf, err := tub.ParseFurl(moved)
	if err != nil || mf.TubID != of.TubID || mf.Swissnum != of.Swissnum || !strings.Contains(moved, "@tcp:127.0.0.1:"+port+"/") {
		t.Fatalf("furl after the move %s (was %s): want the same tub ID and swiss number at port %s", moved, old, port)
	}
	if !strings.Contains(out, moved) {
		t.Errorf("set-location did not print the furl the gatherer uses after the move (%s):\n%s", moved, out)
	}
	// The old address is dead: the nodes follow the new furl.
	if c, err := net.DialTimeout("tcp", of.Hints[0], 2*time.Second); err == nil {
		c.Close()
		t.Errorf("something still listens on the old address %s", of.Hints[0])
	}
	followed := time.Now()
	giveFurl(t, a.dir, moved)
	giveFurl(t, b.dir, moved)
	testutil.WaitFor(t, "both nodes back at the new port", 30*time.Second, func() bool { return fresh(gr.statsPth, followed, a.id, b.id) })
	if f, _ := statsfile.Load(gr.statsPth); len(f.Nodes) != 2 {
		t.Errorf("%d entries after the move, want the same 2", len(f.Nodes))
	}
}

// copyExe installs src at dst the way a package manager does: a new file
// renamed over the old one, so a running process keeps its own.
func copyExe(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := dst + ".new"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

func TestEverydayUpgradeAndStatusAfterRestart(t *testing.T) {
	gr := newGrid(t)
	bin := filepath.Join(gr.work, "bin")
	os.MkdirAll(bin, 0o755)
	copyExe(t, gr.gbin, filepath.Join(bin, "gatherer"))
	copyExe(t, gr.nbin, filepath.Join(bin, "capstats-node"))
	gr.gbin, gr.nbin = filepath.Join(bin, "gatherer"), filepath.Join(bin, "capstats-node")

	// The default interval, 60s: what shows the nodes up after the restart
	// cannot be the next round.
	gr.run()
	furl := gr.furl()
	furlBytes, _ := os.ReadFile(filepath.Join(gr.gdir, "stats_gatherer.furl"))
	began := time.Now() // before the nodes start: at 60s, no second sample soon
	nodes := []*nodeProc{gr.node("one", furl), gr.node("two", furl)}
	testutil.WaitFor(t, "both nodes in stats.json", 30*time.Second, func() bool { return fresh(gr.statsPth, began, nodes[0].id, nodes[1].id) })
	before, err := statsfile.Load(gr.statsPth)
	if err != nil {
		t.Fatal(err)
	}

	// The upgrade: new binaries over the old ones, then a restart.
	root := testbin.Root(t)
	for _, name := range []string{"gatherer", "capstats-node"} {
		newer := filepath.Join(t.TempDir(), name)
		build := exec.Command("go", "build", "-trimpath", "-o", newer, "./cmd/"+name)
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("building the new %s: %v\n%s", name, err, out)
		}
		old, _ := os.ReadFile(filepath.Join(bin, name))
		if nb, _ := os.ReadFile(newer); bytes.Equal(old, nb) {
			t.Fatalf("the new %s is the same file as the old one", name)
		}
		copyExe(t, newer, filepath.Join(bin, name))
	}
	gr.g.signal(t, syscall.SIGTERM)
	restarted := time.Now()
	gr.g = start(t, gr.gbin, "run", "--basedir", gr.gdir)

	// gatherer status right after the restart: every node up again, and
	// until then a reason for every node shown down. The bound is one to
	// give up by, under the default one-minute interval; how fast nodes come
	// back is benchmarked (bench.BenchmarkHandshakeStorm/restart).
	var last string
	took := testutil.WaitFor(t, "status to show both nodes up after the restart", 55*time.Second, func() bool {
		out, err := exec.Command(gr.gbin, "status", "--basedir", gr.gdir).CombinedOutput()
		if err != nil {
			return false
		}
		last = string(out)
		up := 0
		for _, n := range nodes {
			r := row(last, n.id)
			if r == nil {
				t.Fatalf("status lost node %s:\n%s", n.nick, last)
			}
			if r[2] == "yes" {
				up++
			} else if r[len(r)-1] == "-" {
				t.Errorf("status shows %s down with no reason:\n%s", n.nick, last)
			}
		}
		return up == len(nodes)
	})
	t.Logf("status showed both nodes up %s after the restart", took.Round(time.Millisecond))
	for _, want := range []string{"gatherer: running", "stats file: " + gr.statsPth + ", written "} {
		if !strings.Contains(last, want) {
			t.Errorf("status lacks %q:\n%s", want, last)
		}
	}
	if !fresh(gr.statsPth, restarted, nodes[0].id, nodes[1].id) {
		t.Error("status says up but stats.json has no sample since the restart")
	}
	// The furl and the entries survived.
	if b, _ := os.ReadFile(filepath.Join(gr.gdir, "stats_gatherer.furl")); !bytes.Equal(b, furlBytes) {
		t.Errorf("furl file changed across the upgrade:\n%s\n%s", furlBytes, b)
	}
	after, _ := statsfile.Load(gr.statsPth)
	if len(after.Nodes) != len(before.Nodes) {
		t.Fatalf("%d entries after the upgrade, %d before", len(after.Nodes), len(before.Nodes))
	}
	for i := range before.Nodes {
		if after.Nodes[i].TubID != before.Nodes[i].TubID || after.Nodes[i].Nickname != before.Nodes[i].Nickname {
			t.Errorf("entry %d: %s %q, was %s %q", i, after.Nodes[i].TubID, after.Nodes[i].Nickname, before.Nodes[i].TubID, before.Nodes[i].Nickname)
		}
	}
	// The nodes' upgrade: restarted on the new binary, same identities.
	again := time.Now()
	for i, n := range nodes {
		n.signal(t, syscall.SIGTERM)
		p := start(t, gr.nbin, "--basedir", n.dir, "--nickname", n.nick)
		if id := nodeTubID(t, p); id != n.id {
			t.Errorf("node %s has tub ID %s after the upgrade, was %s", n.nick, id, n.id)
		}
		nodes[i].proc = p
	}
	testutil.WaitFor(t, "upgraded nodes back", 30*time.Second, func() bool { return fresh(gr.statsPth, again, nodes[0].id, nodes[1].id) })
}
