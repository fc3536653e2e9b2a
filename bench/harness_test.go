//go:build linux

package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"capstats/capnp/tub"
	"capstats/gatherer"
	"capstats/internal/testbin"
	"capstats/stats"
)

func TestMain(m *testing.M) {
	code := m.Run()
	closeRoundTrip()
	cleanupTools()
	testbin.Cleanup()
	os.Exit(code)
}

// raiseNofile lifts RLIMIT_NOFILE to its hard limit and skips the benchmark
// when even that is below want: the gatherer holds one descriptor per
// provider.
func raiseNofile(tb testing.TB, want int) {
	tb.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatal(err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			tb.Fatalf("raising RLIMIT_NOFILE to %d: %v", lim.Max, err)
		}
	}
	if uint64(want) > lim.Cur {
		tb.Skipf("needs %d file descriptors, RLIMIT_NOFILE hard limit is %d (raise it with ulimit -Hn)", want, lim.Cur)
	}
}

// rssKiB is the resident set size of this process.
func rssKiB(tb testing.TB) int64 {
	tb.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) == 2 && f[1] == "kB" {
				n, err := strconv.ParseInt(f[0], 10, 64)
				if err == nil {
					return n
				}
			}
		}
	}
	tb.Fatalf("no VmRSS in /proc/self/status")
	return 0
}

// cpuTime is the user plus system CPU time this process has used. The
// providers run in other processes, so in a benchmark this is the
// gatherer's (and the harness's, which sleeps).
func cpuTime(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// settleMemory collects garbage and returns freed memory to the OS, so that
// RSS measures what is live.
func settleMemory() {
	runtime.GC()
	debug.FreeOSMemory()
}

// quiesce waits for the goroutines that outlive a call to end, then
// settles memory, so that what is measured next is what stays between
// rounds. go-capnp leaves a goroutine per answered call sleeping 250ms
// before it sends Finish (rpc.(*Conn).handleReturn); a round of n polls
// leaves n of them.
func quiesce() {
	prev := runtime.NumGoroutine()
	for range 20 {
		time.Sleep(300 * time.Millisecond)
		n := runtime.NumGoroutine()
		if n >= prev-2 {
			break
		}
		prev = n
	}
	settleMemory()
}

// pollTracker counts the distinct nodes polled successfully since the last
// reset, from the gatherer's OnPoll hook.
type pollTracker struct {
	mu     sync.Mutex
	gen    int
	seen   map[string]int
	count  int
	first  time.Time // first poll since reset
	last   time.Time // poll that made count reach its current value
	change chan struct{}
}

func newPollTracker() *pollTracker {
	return &pollTracker{gen: 1, seen: make(map[string]int), change: make(chan struct{})}
}

func (p *pollTracker) note(tubID string) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen[tubID] == p.gen {
		return
	}
	p.seen[tubID] = p.gen
	if p.count == 0 {
		p.first = now
	}
	p.count++
	p.last = now
	close(p.change)
	p.change = make(chan struct{})
}

func (p *pollTracker) reset() {
	p.mu.Lock()
	p.gen++
	p.count = 0
	p.first, p.last = time.Time{}, time.Time{}
	p.mu.Unlock()
}

// wait blocks until n distinct nodes have been polled since the last reset
// and returns the times of the first and the n-th.
func (p *pollTracker) wait(n int, within time.Duration) (first, last time.Time, err error) {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		count, ch := p.count, p.change
		first, last = p.first, p.last
		p.mu.Unlock()
		if count >= n {
			return first, last, nil
		}
		select {
		case <-ch:
		case <-deadline.C:
			return first, last, fmt.Errorf("only %d of %d nodes polled within %s", count, n, within)
		}
	}
}

// harnessGatherer is a gatherer daemon in this process whose rounds the
// benchmark drives itself (its interval is an hour).
type harnessGatherer struct {
	tb     testing.TB
	dir    string
	opts   tub.Options
	d      *gatherer.Daemon
	polled *pollTracker
	warns  atomic.Int64
}

// benchConfig is the gatherer configuration of the benchmarks: rounds only
// when the benchmark calls Round, and a round waits for every answer (the
// timeout is generous) so that round time is the time to poll everyone.
func benchConfig(p *pollTracker, warns *atomic.Int64) gatherer.Config {
	return gatherer.Config{
		Interval:   time.Hour,
		Timeout:    60 * time.Second,
		WriteAfter: 60 * time.Second,
		Logger:     slog.New(countingHandler{warns}),
		OnPoll:     func(tubID string, _ time.Time, _ stats.Snapshot) { p.note(tubID) },
	}
}

// countingHandler discards log records and counts warnings and errors.
type countingHandler struct{ n *atomic.Int64 }

func (h countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h countingHandler) Handle(context.Context, slog.Record) error    { h.n.Add(1); return nil }
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h countingHandler) WithGroup(string) slog.Handler                { return h }

// startGatherer creates a gatherer basedir in dir (unless one is there) and
// starts it; it is closed when the benchmark ends.
func startGatherer(tb testing.TB, dir string, opts tub.Options) *harnessGatherer {
	tb.Helper()
	if empty, err := gatherer.IsEmptyDir(dir); err != nil {
		tb.Fatal(err)
	} else if empty {
		if err := gatherer.Create(dir, gatherer.CreateOptions{Hostname: "127.0.0.1"}); err != nil {
			tb.Fatal(err)
		}
	}
	g := &harnessGatherer{tb: tb, dir: dir, opts: opts, polled: newPollTracker()}
	g.start()
	tb.Cleanup(g.close)
	return g
}

func (g *harnessGatherer) start() {
	g.tb.Helper()
	d, err := gatherer.Start(g.dir, benchConfig(g.polled, &g.warns), g.opts)
	if err != nil {
		g.tb.Fatal(err)
	}
	g.d = d
}

// close stops the gatherer: listener first, so that nodes that redial find
// nobody until restart, then the gatherer (which writes the file).
func (g *harnessGatherer) close() {
	if g.d == nil {
		return
	}
	g.d.Listener.Close()
	g.d.Close()
	g.d = nil
}

// restart closes the gatherer and starts it again from its basedir, on the
// same port with the same furl, as after a gatherer restart.
func (g *harnessGatherer) restart() {
	g.tb.Helper()
	g.close()
	g.polled.reset()
	g.start()
}

// statsPath is the gatherer's stats.json.
func (g *harnessGatherer) statsPath() string { return filepath.Join(g.dir, gatherer.StatsFile) }

// loadgen is a cmd/loadgen child process.
type loadgen struct {
	tb     testing.TB
	cmd    *exec.Cmd
	stderr *boundedBuffer
	exited chan struct{}
	err    error // from Wait, once exited is closed

	mu      sync.Mutex
	lines   []string
	newLine chan struct{}
}

// startLoadgen runs cmd/loadgen against furl with args; it is stopped when
// the benchmark ends.
func startLoadgen(tb testing.TB, furl tub.Furl, args ...string) *loadgen {
	tb.Helper()
	bin := testbin.Build(tb, "loadgen")
	cmd := exec.Command(bin, append([]string{"-furl", furl.String(), "-lifetime", "1h"}, args...)...)
	// The child dies with the benchmark process, whatever happens to it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	l := &loadgen{tb: tb, cmd: cmd, stderr: &boundedBuffer{max: 64 << 10}, exited: make(chan struct{}), newLine: make(chan struct{})}
	cmd.Stderr = l.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			l.mu.Lock()
			l.lines = append(l.lines, sc.Text())
			close(l.newLine)
			l.newLine = make(chan struct{})
			l.mu.Unlock()
		}
		l.err = cmd.Wait()
		close(l.exited)
	}()
	tb.Cleanup(func() {
		if err := l.stop(); err != nil {
			tb.Errorf("loadgen: %v", err)
		}
	})
	return l
}

// waitLine waits for a line starting with prefix and returns its
// key=value fields.
func (l *loadgen) waitLine(prefix string, within time.Duration) (map[string]string, error) {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	seen := 0
	for {
		l.mu.Lock()
		lines, ch := l.lines[seen:], l.newLine
		seen = len(l.lines)
		l.mu.Unlock()
		for _, line := range lines {
			if strings.HasPrefix(line, prefix) {
				return fields(line), nil
			}
		}
		select {
		case <-ch:
		case <-l.exited:
			l.mu.Lock()
			more := len(l.lines) > seen
			l.mu.Unlock()
			if !more {
				return nil, fmt.Errorf("loadgen exited (%v) before printing %q; stderr:\n%s", l.err, prefix, l.stderr)
			}
		case <-deadline.C:
			return nil, fmt.Errorf("no %q line from loadgen within %s; stderr:\n%s", prefix, within, l.stderr)
		}
	}
}

// stop sends SIGTERM and waits for a clean exit; a loadgen that does not
// exit within 30s is killed.
func (l *loadgen) stop() error {
	select {
	case <-l.exited:
		return l.exitErr()
	default:
	}
	l.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-l.exited:
		return l.exitErr()
	case <-time.After(30 * time.Second):
		l.cmd.Process.Kill()
		<-l.exited
		return fmt.Errorf("did not exit within 30s of SIGTERM; killed")
	}
}

func (l *loadgen) exitErr() error {
	if l.err != nil {
		return fmt.Errorf("exit: %v; stderr:\n%s", l.err, l.stderr)
	}
	return nil
}

// fields parses the key=value words of a loadgen line.
func fields(line string) map[string]string {
	m := map[string]string{}
	for _, w := range strings.Fields(line) {
		if k, v, ok := strings.Cut(w, "="); ok {
			m[k] = v
		}
	}
	return m
}

func atoi(tb testing.TB, m map[string]string, key string) int {
	tb.Helper()
	n, err := strconv.Atoi(m[key])
	if err != nil {
		tb.Fatalf("field %s=%q: %v", key, m[key], err)
	}
	return n
}

// boundedBuffer keeps the first max bytes written to it.
type boundedBuffer struct {
	mu  sync.Mutex
	max int
	b   bytes.Buffer
}

func (w *boundedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if room := w.max - w.b.Len(); room > 0 {
		w.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (w *boundedBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// connectProviders starts a loadgen of n providers against g and waits
// until every one has been polled once (the gatherer polls a node as soon
// as it provides).
func connectProviders(tb testing.TB, g *harnessGatherer, n int, args ...string) *loadgen {
	tb.Helper()
	lg := startLoadgen(tb, g.d.Furl, append([]string{"-n", strconv.Itoa(n)}, args...)...)
	ready, err := lg.waitLine("loadgen: ready", 10*time.Minute)
	if err != nil {
		tb.Fatal(err)
	}
	if c := atoi(tb, ready, "connected"); c != n {
		tb.Fatalf("loadgen connected %d of %d providers: %v; stderr:\n%s", c, n, ready, lg.stderr)
	}
	if _, _, err := g.polled.wait(n, 2*time.Minute); err != nil {
		tb.Fatal(err)
	}
	return lg
}

// goroutineSampler records the peak number of goroutines while it runs.
type goroutineSampler struct {
	peak atomic.Int64
	stop chan struct{}
	done chan struct{}
}

func sampleGoroutines(every time.Duration) *goroutineSampler {
	s := &goroutineSampler{stop: make(chan struct{}), done: make(chan struct{})}
	s.peak.Store(int64(runtime.NumGoroutine()))
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				if n := int64(runtime.NumGoroutine()); n > s.peak.Load() {
					s.peak.Store(n)
				}
			}
		}
	}()
	return s
}

func (s *goroutineSampler) finish() int64 {
	close(s.stop)
	<-s.done
	return s.peak.Load()
}
