package reliability

import (
	"bufio"
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
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

// gathererProc is a `gatherer run` process.
type gathererProc struct {
	cmd    *exec.Cmd
	dir    string
	furl   tub.Furl
	stderr *testutil.SyncBuffer
	exited chan struct{}
}

func createGatherer(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "gatherer")
	out, err := exec.Command(testbin.Build(t, "gatherer"), "create", "--basedir", dir, "--hostname", "127.0.0.1").CombinedOutput()
	if err != nil {
		t.Fatalf("gatherer create: %v\n%s", err, out)
	}
	return dir
}

// startGatherer runs the gatherer binary on dir and waits for its furl.
func startGatherer(t *testing.T, dir string, args ...string) *gathererProc {
	t.Helper()
	cmd := exec.Command(testbin.Build(t, "gatherer"), append([]string{"run", "--basedir", dir}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	g := &gathererProc{cmd: cmd, dir: dir, stderr: &testutil.SyncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = g.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.kill() })
	furl := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if f, ok := strings.CutPrefix(sc.Text(), "StatsGatherer: "); ok {
				select {
				case furl <- f:
				default:
				}
			}
		}
	}()
	go func() { cmd.Wait(); close(g.exited) }()
	select {
	case f := <-furl:
		if g.furl, err = tub.ParseFurl(f); err != nil {
			t.Fatal(err)
		}
	case <-g.exited:
		t.Fatalf("gatherer exited before printing its furl:\n%s", g.stderr)
	case <-time.After(30 * time.Second):
		t.Fatal("gatherer printed no furl within 30s")
	}
	return g
}

func (g *gathererProc) kill() {
	syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
	<-g.exited
}

func (g *gathererProc) stop(t *testing.T) {
	t.Helper()
	g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
		if code := g.cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("gatherer exited %d after SIGTERM:\n%s", code, g.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("gatherer did not stop within 30s of SIGTERM")
	}
}

// peakRSS returns the process's peak resident set in bytes (VmHWM).
func (g *gathererProc) peakRSS(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(g.cmd.Process.Pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}
