package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"capstats/capnp/tub"
	"capstats/internal/clock/clocktest"
)

// fakeDialer hands every dial to the test, which decides its result.
type fakeDialer struct {
	clock *clocktest.Fake
	calls chan *dialCall
}

type dialCall struct {
	at    time.Time
	furl  tub.Furl
	l     *link
	reply chan error
	sess  *fakeSession // returned when the reply is nil
}

func newFakeDialer(c *clocktest.Fake) *fakeDialer {
	return &fakeDialer{clock: c, calls: make(chan *dialCall, 16)}
}

func (d *fakeDialer) dial(ctx context.Context, f tub.Furl, l *link) (session, error) {
	c := &dialCall{at: d.clock.Now(), furl: f, l: l, reply: make(chan error, 1), sess: newFakeSession()}
	select {
	case d.calls <- c:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case err := <-c.reply:
		if err != nil {
			return nil, err
		}
		return c.sess, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// next returns the next dial, failing the test after 10 s.
func (d *fakeDialer) next(t *testing.T) *dialCall {
	t.Helper()
	select {
	case c := <-d.calls:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no dial within 10 s")
		return nil
	}
}

// none checks that no dial happens for a short while.
func (d *fakeDialer) none(t *testing.T) {
	t.Helper()
	select {
	case c := <-d.calls:
		t.Fatalf("unexpected dial of %s", c.furl.Redacted())
	case <-time.After(100 * time.Millisecond):
	}
}

type fakeSession struct {
	done   chan struct{}
	once   sync.Once
	mu     sync.Mutex
	closed bool // closed by the node, as opposed to dropped by the peer
}

func newFakeSession() *fakeSession { return &fakeSession{done: make(chan struct{})} }

func (s *fakeSession) Done() <-chan struct{} { return s.done }

func (s *fakeSession) Err() error { return nil }

func (s *fakeSession) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.once.Do(func() { close(s.done) })
	return nil
}

func (s *fakeSession) drop() { s.once.Do(func() { close(s.done) }) }

func (s *fakeSession) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// waitClosed waits up to 10 s for the node to close s.
func (s *fakeSession) waitClosed(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !s.isClosed() {
		if time.Now().After(deadline) {
			t.Fatal("session not closed within 10 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// waitTimer waits until a timer set for about d is pending.
func waitTimer(t *testing.T, c *clocktest.Fake, d time.Duration) { t.Helper(); waitTimers(t, c, d, 1) }

// waitTimers waits until n timers set for about d are pending.
func waitTimers(t *testing.T, c *clocktest.Fake, d time.Duration, n int) {
	t.Helper()
	c.WaitTimer(t, d, n)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func testFurl(t testing.TB) string {
	t.Helper()
	id, err := tub.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return "capnp://" + id.TubID() + "@tcp:127.0.0.1:9/" + tub.NewSwissnum()
}

func writeFurl(t testing.TB, dir, furl string) {
	t.Helper()
	p := filepath.Join(dir, FurlFile)
	tmp := p + ".tmp"
	must(t, os.WriteFile(tmp, []byte(furl+"\n"), 0o600))
	must(t, os.Rename(tmp, p))
}

type harness struct {
	n     *Node
	p     *Provider
	clock *clocktest.Fake
	d     *fakeDialer
	dir   string
	logs  *syncBuffer
	stop  func()
}

// startNode runs a node with a fake clock and dialer; furl "" means no
// furl file.
func startNode(t *testing.T, furl string, tweak func(*Config)) *harness {
	t.Helper()
	h := &harness{clock: clocktest.New(), dir: t.TempDir()}
	h.d = newFakeDialer(h.clock)
	if furl != "" {
		writeFurl(t, h.dir, furl)
	}
	log, logs := bufLogger(-8)
	h.logs = logs
	h.p = NewProvider(ProviderOptions{Logger: log})
	cfg := Config{
		BaseDir: h.dir, Nickname: "test", Logger: log,
		FurlCheckInterval: 1000 * time.Hour, LoadMonitor: true,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	n, err := open(h.p, cfg, seams{clock: h.clock, dial: h.d.dial, jitter: -1})
	must(t, err)
	h.n = n
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := n.Run(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	}()
	h.stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10 s of cancel")
		}
	}
	t.Cleanup(h.stop)
	return h
}

// waitRetry waits for the node's retry timer of d. With a gatherer
// configured the load monitor always has a 1 s timer pending too.
func (h *harness) waitRetry(t *testing.T, d time.Duration) {
	t.Helper()
	if d == time.Second {
		waitTimers(t, h.clock, d, 2)
		return
	}
	waitTimer(t, h.clock, d)
}

func secsF(f float64) time.Duration { return time.Duration(f * 1e9) }

func TestReconnectBackoffAndReset(t *testing.T) {
	h := startNode(t, testFurl(t), func(c *Config) { c.MaxBackoff = 10 * time.Second })
	e := math.E
	refused := errors.New("connection refused")

	c := h.d.next(t)
	start := c.at
	// Failures: 1 s, e s, e² s, then the 10 s cap.
	for _, d := range []time.Duration{time.Second, secsF(e), secsF(e * e), 10 * time.Second, 10 * time.Second} {
		c.reply <- refused
		h.waitRetry(t, d)
		h.clock.Advance(d)
		c = h.d.next(t)
	}
	if got, want := c.at.Sub(start), secsF(1+e+e*e+20); got-want > time.Microsecond || want-got > time.Microsecond {
		t.Fatalf("sixth attempt after %v, want %v", got, want)
	}
	c.reply <- nil
	c.l.provided <- nil // the gatherer accepted
	waitFor(t, "connected state", func() bool { return h.n.State().Connected })

	// An established connection drops: the schedule starts again at 1 s.
	c.sess.drop()
	h.waitRetry(t, time.Second)
	h.clock.Advance(time.Second)
	c = h.d.next(t)
	c.reply <- refused
	waitTimer(t, h.clock, secsF(e))
	h.clock.Advance(secsF(e))
	c = h.d.next(t)
	c.reply <- nil
	waitFor(t, "connected state", func() bool { return h.n.State().Connected })

	// One warning for the first failure of each streak, not per attempt:
	// the streak at start, and the one after the drop.
	logs := h.logs.String()
	if n := strings.Count(logs, "cannot connect to stats gatherer; will keep trying"); n != 2 {
		t.Errorf("%d 'cannot connect' warnings, want 2:\n%s", n, logs)
	}
	if n := strings.Count(logs, "connection to stats gatherer lost"); n != 1 {
		t.Errorf("%d 'lost' warnings, want 1:\n%s", n, logs)
	}
	if n := strings.Count(logs, "connected to stats gatherer"); n != 2 {
		t.Errorf("%d 'connected' lines, want 2:\n%s", n, logs)
	}
}

// While reconnecting keeps failing, the node says so at growing intervals
// (1 min, 10 min, then hourly from the streak's start), never further apart
// than the backoff cap, each line with the count and the latest reason.
func TestReconnectStreakLogged(t *testing.T) {
	for _, c := range []struct {
		name     string
		max      time.Duration
		failures int
		want     []string // the failures= of the "still cannot connect" lines
	}{
		// Failures at 0, 1, 3.7, 11.1, 31.2, 85.8, 234, 638, 1734, 4715,
		// 11915, 19115 s: due at 60 s, then 600 s and 3600 s after each
		// line.
		{"hourly", 2 * time.Hour, 12, []string{"6", "9", "11", "12"}},
		// The cap of 10 min is reached at failure 9, and lines come at
		// every failure from then on.
		{"capped", 10 * time.Minute, 11, []string{"6", "9", "10", "11"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := startNode(t, testFurl(t), func(cfg *Config) {
				cfg.MaxBackoff = c.max
				cfg.LoadMonitor = false
			})
			for i := 1; i <= c.failures; i++ {
				h.d.next(t).reply <- fmt.Errorf("refused #%d", i)
				if i == c.failures {
					break
				}
				// The pending timers: the furl check's and the retry's.
				d := h.clock.WaitTimers(t, 2)
				retry := min(d[0], d[1])
				h.clock.Advance(retry)
			}
			// The last failure's line is logged before its wait.
			h.clock.WaitTimers(t, 2)
			logs := h.logs.String()
			var got []string
			for _, line := range strings.Split(logs, "\n") {
				if !strings.Contains(line, "still cannot connect to stats gatherer") {
					continue
				}
				f := strings.Fields(line[strings.Index(line, "failures="):])[0]
				got = append(got, strings.TrimPrefix(f, "failures="))
				n, _ := strconv.Atoi(got[len(got)-1])
				if !strings.Contains(line, fmt.Sprintf("err=\"refused #%d\"", n)) || !strings.Contains(line, "failing_for=") {
					t.Errorf("line without the latest reason or the streak's length: %s", line)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("'still cannot connect' at failures %v, want %v:\n%s", got, c.want, logs)
			}
			if n := strings.Count(logs, "will keep trying"); n != 1 || !strings.Contains(logs, `err="refused #1"`) {
				t.Errorf("want the first failure once with its reason:\n%s", logs)
			}
		})
	}
}

// A gatherer that refuses provide is a failure: the backoff keeps growing.
func TestProvideRefusedBacksOff(t *testing.T) {
	h := startNode(t, testFurl(t), nil)
	for _, d := range []time.Duration{time.Second, secsF(math.E), secsF(math.E * math.E)} {
		c := h.d.next(t)
		c.reply <- nil
		c.l.provided <- errors.New("provide: connection is not authenticated")
		c.sess.waitClosed(t)
		h.waitRetry(t, d)
		h.clock.Advance(d)
	}
	h.d.next(t).reply <- errors.New("stop here")
	if !strings.Contains(h.logs.String(), "gatherer refused this node") {
		t.Fatalf("refusal not logged:\n%s", h.logs.String())
	}
}

func TestLivenessClosesSilentConnection(t *testing.T) {
	h := startNode(t, testFurl(t), nil) // LivenessTimeout: default 3 min
	c := h.d.next(t)
	c.reply <- nil
	c.l.provided <- nil
	waitFor(t, "connected state", func() bool { return h.n.State().Connected })

	// No poll at all: closed after the default 3 minutes, not before.
	waitTimer(t, h.clock, DefaultLivenessTimeout)
	h.clock.Advance(DefaultLivenessTimeout - time.Second)
	time.Sleep(20 * time.Millisecond)
	if c.sess.isClosed() {
		t.Fatal("closed before the liveness timeout")
	}
	h.clock.Advance(time.Second)
	c.sess.waitClosed(t)

	// Established, so the next attempt comes 1 s later.
	h.waitRetry(t, time.Second)
	h.clock.Advance(time.Second)
	c = h.d.next(t)
	c.reply <- nil
	c.l.provided <- nil
	poll := func() { c.l.polled(h.clock.Now()) }
	// The gatherer polls at once, then in rounds every 60 s, the first
	// 10 s after the connection. (No poll at all on the first connection
	// made the node allow twice the default before learning.)
	waitTimer(t, h.clock, 2*DefaultLivenessTimeout)
	poll()
	for _, gap := range []time.Duration{10 * time.Second, time.Minute, time.Minute} {
		h.clock.Advance(gap)
		poll()
	}
	// Interval learned: gaps 10 s, 60 s, 60 s -> 3 x 60 s = 180 s after the
	// last poll, sooner than the 6 minutes allowed before learning.
	h.clock.Advance(179 * time.Second)
	time.Sleep(20 * time.Millisecond)
	if c.sess.isClosed() {
		t.Fatal("closed before three poll intervals")
	}
	h.clock.Advance(2 * time.Second)
	c.sess.waitClosed(t)
	if !strings.Contains(h.logs.String(), "no poll from stats gatherer") {
		t.Fatalf("liveness close not logged:\n%s", h.logs.String())
	}
}

// A connection that learned a short interval is closed after three of them.
func TestLivenessLearnsFastInterval(t *testing.T) {
	h := startNode(t, testFurl(t), nil)
	c := h.d.next(t)
	c.reply <- nil
	waitTimer(t, h.clock, DefaultLivenessTimeout)
	for i := range 4 {
		if i > 0 {
			h.clock.Advance(2 * time.Second)
		}
		c.l.polled(h.clock.Now())
	}
	// Interval 2 s: dead 6 s after the last poll.
	waitTimer(t, h.clock, 6*time.Second)
	h.clock.Advance(5 * time.Second)
	time.Sleep(20 * time.Millisecond)
	if c.sess.isClosed() {
		t.Fatal("closed 5 s after the last of polls 2 s apart")
	}
	h.clock.Advance(time.Second)
	c.sess.waitClosed(t)
	h.waitRetry(t, time.Second) // polls were seen: established, reset
}

// If no interval was learned before a liveness close, the next
// connection waits twice as long before its own.
func TestLivenessEscalatesWithoutPolls(t *testing.T) {
	h := startNode(t, testFurl(t), func(c *Config) { c.LivenessTimeout = time.Minute })
	c := h.d.next(t)
	c.reply <- nil
	c.l.provided <- nil
	waitTimer(t, h.clock, time.Minute)
	h.clock.Advance(time.Minute)
	c.sess.waitClosed(t)
	h.waitRetry(t, time.Second)
	h.clock.Advance(time.Second)
	c = h.d.next(t)
	c.reply <- nil
	waitTimer(t, h.clock, 2*time.Minute)
}

func TestFurlReloadAndWatch(t *testing.T) {
	furlA, furlB := testFurl(t), testFurl(t)
	h := startNode(t, furlA, func(c *Config) { c.FurlCheckInterval = 5 * time.Second })
	c := h.d.next(t)
	if c.furl.String() != furlA {
		t.Fatalf("dialled %s, want %s", c.furl, furlA)
	}
	c.reply <- nil
	c.l.provided <- nil
	waitFor(t, "connected", func() bool { return h.n.State().Connected })

	// Reload (SIGHUP) with a new furl: the old connection goes, the new
	// furl is dialled.
	writeFurl(t, h.dir, furlB)
	h.n.Reload()
	c.sess.waitClosed(t)
	c = h.d.next(t)
	if c.furl.String() != furlB {
		t.Fatalf("dialled %s after reload, want %s", c.furl, furlB)
	}
	c.reply <- nil

	// Reload with the same furl while connected: nothing happens.
	h.n.Reload()
	h.d.none(t)
	if c.sess.isClosed() {
		t.Fatal("unchanged furl closed the connection")
	}

	// A malformed furl keeps the current gatherer and is reported.
	must(t, os.WriteFile(filepath.Join(h.dir, FurlFile), []byte("pb://nonsense\n"), 0o600))
	h.n.Reload()
	waitFor(t, "error logged", func() bool { return strings.Contains(h.logs.String(), "keeping the current gatherer") })
	if c.sess.isClosed() {
		t.Fatal("malformed furl closed the connection")
	}

	// Removing the file disconnects.
	must(t, os.Remove(filepath.Join(h.dir, FurlFile)))
	h.n.Reload()
	c.sess.waitClosed(t)
	waitFor(t, "no gatherer", func() bool { return h.n.State().Gatherer == "" })
	h.d.none(t)

	// The file appears again: noticed by its modification time, no signal.
	writeFurl(t, h.dir, furlA)
	h.clock.Advance(5 * time.Second)
	c = h.d.next(t)
	if c.furl.String() != furlA {
		t.Fatalf("dialled %s, want %s", c.furl, furlA)
	}

	// While waiting to retry, a Reload of the same furl retries at once.
	c.reply <- errors.New("refused")
	h.waitRetry(t, time.Second)
	h.n.Reload()
	c = h.d.next(t)
	c.reply <- nil
	waitFor(t, "connected", func() bool { return h.n.State().Connected })

	// A changed file is noticed within one check interval.
	writeFurl(t, h.dir, furlB)
	later := time.Now().Add(time.Hour)
	must(t, os.Chtimes(filepath.Join(h.dir, FurlFile), later, later))
	h.clock.Advance(5 * time.Second)
	c.sess.waitClosed(t)
	if c = h.d.next(t); c.furl.String() != furlB {
		t.Fatalf("dialled %s, want %s", c.furl, furlB)
	}
}

func TestNoFurlRunsWithoutGatherer(t *testing.T) {
	h := startNode(t, "", nil)
	h.d.none(t)
	if s := h.n.State(); s.Gatherer != "" || s.Connected {
		t.Fatalf("state %+v", s)
	}
	logs := h.logs.String()
	if strings.Count(logs, "no stats gatherer configured") != 1 {
		t.Fatalf("want the absence said once:\n%s", logs)
	}
	// The load monitor runs only with a gatherer.
	if _, ok := h.p.Snapshot(context.Background()).Stats.Map()["load_monitor.avg_load"]; ok {
		t.Fatal("load monitor registered without a gatherer")
	}
	// The tub ID is logged.
	if !strings.Contains(logs, h.n.TubID()) {
		t.Fatalf("tub ID not logged:\n%s", logs)
	}
	fi, err := os.Stat(filepath.Join(h.dir, IdentityFile))
	must(t, err)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity mode %v", fi.Mode())
	}
}

func TestLoadMonitorStartsWithGatherer(t *testing.T) {
	h := startNode(t, testFurl(t), nil)
	h.d.next(t).reply <- nil
	waitFor(t, "load monitor", func() bool {
		_, ok := h.p.Snapshot(context.Background()).Stats.Map()["load_monitor.avg_load"]
		return ok
	})
}

// Without Config.LoadMonitor the node registers nothing on the provider.
func TestNoLoadMonitorUnlessAsked(t *testing.T) {
	h := startNode(t, testFurl(t), func(c *Config) { c.LoadMonitor = false })
	c := h.d.next(t)
	c.reply <- nil
	c.l.provided <- nil
	waitFor(t, "connected", func() bool { return h.n.State().Connected })
	if s := h.p.Snapshot(context.Background()).Stats.Map(); len(s) != 0 {
		t.Fatalf("the node registered producers of its own: %v", s)
	}
}

func TestRunTwice(t *testing.T) {
	h := startNode(t, "", nil)
	waitFor(t, "Run started", func() bool {
		h.n.runMu.Lock()
		defer h.n.runMu.Unlock()
		return h.n.running
	})
	if err := h.n.Run(context.Background()); err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("second Run = %v, want an error", err)
	}
}

// A furl file others may read, as `echo FURL > stats_gatherer.furl` makes
// it, is used and tightened to 0600 with one warning.
func TestFurlFileModeTightened(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FurlFile)
	furl := testFurl(t)
	must(t, os.WriteFile(path, []byte(furl+"\n"), 0o644))
	must(t, os.Chmod(path, 0o644)) // whatever the umask
	log, logs := bufLogger(slog.LevelDebug)
	n, err := Open(NewProvider(ProviderOptions{}), Config{BaseDir: dir, Logger: log})
	must(t, err)
	if got := n.State().Gatherer; got == "" {
		t.Fatal("furl of mode 0644 not used")
	}
	fi, err := os.Stat(path)
	must(t, err)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("furl file mode %v after Open, want 0600", fi.Mode().Perm())
	}
	// Read again, now private: no second warning.
	n.reread(true)
	if c := strings.Count(logs.String(), "tightened it to 0600"); c != 1 {
		t.Fatalf("%d warnings, want 1:\n%s", c, logs.String())
	}
}

// A loose furl file the node does not own is used as it is, with one
// warning however often it is read.
func TestFurlFileModeNotOwned(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the file to another user")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, FurlFile)
	must(t, os.WriteFile(path, []byte(testFurl(t)+"\n"), 0o644))
	must(t, os.Chmod(path, 0o644))
	must(t, os.Chown(path, 65534, 65534))
	log, logs := bufLogger(slog.LevelDebug)
	n, err := Open(NewProvider(ProviderOptions{}), Config{BaseDir: dir, Logger: log})
	must(t, err)
	if n.State().Gatherer == "" {
		t.Fatal("furl not used")
	}
	n.reread(true)
	n.reread(true)
	fi, err := os.Stat(path)
	must(t, err)
	if fi.Mode().Perm() != 0o644 {
		t.Fatalf("another user's file changed to %v", fi.Mode().Perm())
	}
	if c := strings.Count(logs.String(), "cannot be tightened; using it anyway"); c != 1 {
		t.Fatalf("%d warnings, want 1:\n%s", c, logs.String())
	}
}

func TestOpenRefusesBadFurl(t *testing.T) {
	cases := map[string]string{
		"garbage":   "not a furl",
		"foolscap":  "pb://" + strings.TrimPrefix(testFurl(t), "capnp://"),
		"empty":     "   \n",
		"two lines": testFurl(t) + "\n" + testFurl(t),
		"no hints":  "capnp://abc@/def",
	}
	for name, content := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, FurlFile)
			must(t, os.WriteFile(path, []byte(content), 0o600))
			_, err := Open(NewProvider(ProviderOptions{}), Config{BaseDir: dir, Logger: quietLogger()})
			if err == nil || !strings.Contains(err.Error(), path) {
				t.Fatalf("Open = %v, want an error naming %s", err, path)
			}
			if name == "foolscap" && !strings.Contains(strings.ToLower(err.Error()), "foolscap") {
				t.Fatalf("pb:// furl error does not explain: %v", err)
			}
		})
	}
}

func TestOpenBaseDir(t *testing.T) {
	if _, err := Open(NewProvider(ProviderOptions{}), Config{BaseDir: filepath.Join(t.TempDir(), "missing"), Logger: quietLogger()}); err == nil {
		t.Fatal("Open of a missing base directory succeeded")
	}
	f := filepath.Join(t.TempDir(), "file")
	must(t, os.WriteFile(f, nil, 0o600))
	if _, err := Open(NewProvider(ProviderOptions{}), Config{BaseDir: f, Logger: quietLogger()}); err == nil {
		t.Fatal("Open of a file as base directory succeeded")
	}
	// The identity persists: the same tub ID on the next Open.
	dir := t.TempDir()
	n1, err := Open(NewProvider(ProviderOptions{}), Config{BaseDir: dir, Logger: quietLogger()})
	must(t, err)
	n2, err := Open(NewProvider(ProviderOptions{}), Config{BaseDir: dir, Logger: quietLogger()})
	must(t, err)
	if n1.TubID() != n2.TubID() || len(n1.TubID()) != 32 {
		t.Fatalf("tub IDs %q and %q", n1.TubID(), n2.TubID())
	}
}
