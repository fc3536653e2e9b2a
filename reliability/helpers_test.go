package reliability

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"capstats/capnp/statsrpc"
	"capstats/capnp/tub"
	"capstats/internal/testbin"
	"capstats/stats"
	"capstats/wire"
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
	stderr *syncBuffer
	exited chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
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
	g := &gathererProc{cmd: cmd, dir: dir, stderr: &syncBuffer{}, exited: make(chan struct{})}
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

// provider is an in-process node: an identity and a scripted getStats.
type provider struct {
	id     *tub.Identity
	calls  atomic.Int64
	mu     sync.Mutex
	answer func(statsrpc.Provider_getStats) error // nil: hang
}

func newProvider(t testing.TB, answer func(statsrpc.Provider_getStats) error) *provider {
	id, err := tub.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return &provider{id: id, answer: answer}
}

func (p *provider) GetStats(ctx context.Context, call statsrpc.Provider_getStats) error {
	p.calls.Add(1)
	p.mu.Lock()
	a := p.answer
	p.mu.Unlock()
	if a == nil {
		call.Go()
		<-ctx.Done()
		return ctx.Err()
	}
	return a(call)
}

func (p *provider) Ping(context.Context, statsrpc.Provider_ping) error { return nil }

// attach dials furl and provides p once; the caller closes the Conn.
func (p *provider) attach(ctx context.Context, furl tub.Furl, nickname string) (*tub.Conn, error) {
	conn, err := tub.Dial(ctx, furl, p.id, capnp.Client{}, nil)
	if err != nil {
		return nil, err
	}
	fut, rel := statsrpc.Gatherer(conn.Object()).Provide(ctx, func(a statsrpc.Gatherer_provide_Params) error {
		a.SetNickname(nickname)
		return a.SetProvider(statsrpc.Provider_ServerToClient(p))
	})
	_, err = fut.Struct()
	rel()
	if err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// stayAttached keeps p attached to furl, re-dialling every 100ms after a
// drop, until ctx is done.
func (p *provider) stayAttached(ctx context.Context, furl tub.Furl, nickname string) {
	for ctx.Err() == nil {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := p.attach(dctx, furl, nickname)
		cancel()
		if err == nil {
			select {
			case <-conn.Done():
			case <-ctx.Done():
			}
			conn.Close()
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func answerWith(s stats.Snapshot) func(statsrpc.Provider_getStats) error {
	return func(call statsrpc.Provider_getStats) error {
		res, err := call.AllocResults()
		if err != nil {
			return err
		}
		st, err := res.NewStats()
		if err != nil {
			return err
		}
		return wire.FromSnapshot(s, st)
	}
}

// snapshotOf makes a snapshot of n counters and n stats.
func snapshotOf(n int) stats.Snapshot {
	s := stats.Snapshot{Counters: stats.Map{}, Stats: stats.Map{}}
	for i := 0; i < n; i++ {
		s.Counters["bench.counter_"+strconv.Itoa(i)] = stats.Int(int64(i))
		s.Stats["bench.stat_"+strconv.Itoa(i)] = stats.Float(float64(i) / 3)
	}
	return s
}

// waitFor polls cond until it holds or the bound runs out.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
