package gatherer

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"capstats/capnp/statsrpc"
	"capstats/capnp/tub"
	"capstats/internal/fakenode"
	"capstats/internal/testutil"
	"capstats/stats"
	"capstats/statsfile"
)

var sample = stats.Snapshot{
	Counters: stats.SetOf(stats.Map{"storage_server.allocate": stats.Int(12)}),
	Stats: stats.SetOf(stats.Map{
		"load_monitor.avg_load": stats.Float(0.5),
		"node.uptime":           stats.Int(42),
		"storage_server.latencies.get.99_9_percentile": stats.Null(),
	}),
}

// startDaemon creates and starts a gatherer in a temp basedir, running
// rounds in the background until the test ends.
func startDaemon(t *testing.T, cfg Config) (*Daemon, *testutil.SyncBuffer) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "g")
	if err := Create(dir, CreateOptions{Hostname: "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	verbose := &testutil.SyncBuffer{}
	cfg.Verbose = verbose
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(verbose, nil))
	}
	d, err := Start(dir, cfg, tub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; d.Close() })
	return d, verbose
}

func readStats(t *testing.T, path string) map[string]map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var m map[string]map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("stats.json does not parse: %v\n%s", err, b)
	}
	return m
}

func TestProviderAppearsWithExactShape(t *testing.T) {
	d, _ := startDaemon(t, Config{Interval: time.Second})
	n, _ := fakenode.Connect(t, d.Furl, "storage 1", fakenode.AnswerWith(sample))
	var entry map[string]any
	testutil.WaitFor(t, "node in stats.json", 10*time.Second, func() bool {
		entry = readStats(t, d.g.cfg.StatsFile)[n.TubID()]
		return entry != nil && entry["timestamp"] != nil && entry["timestamp"] != json.Number("0")
	})
	raw, _ := os.ReadFile(d.g.cfg.StatsFile)
	for _, want := range []string{
		`"storage_server.allocate":12`, `"load_monitor.avg_load":0.5`, `"node.uptime":42`,
		`"storage_server.latencies.get.99_9_percentile":null`, `"nickname":"storage 1"`, `"up":true`,
	} {
		if !bytes.Contains(bytes.ReplaceAll(raw, []byte(" "), nil), []byte(strings.ReplaceAll(want, " ", ""))) {
			t.Errorf("stats.json lacks %s:\n%s", want, raw)
		}
	}
	keys := []string{"timestamp", "nickname", "stats", "up", "last_poll", "last_error", "poll_seconds"}
	for _, k := range keys {
		if _, ok := entry[k]; !ok {
			t.Errorf("entry lacks %q: %v", k, entry)
		}
	}
	st := entry["stats"].(map[string]any)
	if len(st) != 2 || st["counters"] == nil || st["stats"] == nil {
		t.Errorf("stats has keys %v, want counters and stats", st)
	}
	if ts, _ := entry["timestamp"].(json.Number).Float64(); time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Errorf("timestamp %v is not recent", ts)
	}
}

func TestHungProviderDoesNotDelayOthers(t *testing.T) {
	d, verbose := startDaemon(t, Config{Interval: time.Second, Timeout: 700 * time.Millisecond, WriteAfter: 300 * time.Millisecond})
	healthy, _ := fakenode.Connect(t, d.Furl, "healthy", fakenode.AnswerWith(sample))
	testutil.WaitFor(t, "healthy polled", 10*time.Second, func() bool { return healthy.Calls() > 0 })
	base := runtime.NumGoroutine()
	hung, hungConn := fakenode.Connect(t, d.Furl, "hung", nil)

	testutil.WaitFor(t, "healthy written while hung is in flight", 10*time.Second, func() bool {
		m := readStats(t, d.g.cfg.StatsFile)
		h := m[healthy.TubID()]
		return h != nil && h["last_error"] == "" && h["timestamp"] != json.Number("0")
	})
	testutil.WaitFor(t, "hung node marked with the timeout", 10*time.Second, func() bool {
		e := readStats(t, d.g.cfg.StatsFile)[hung.TubID()]
		return e != nil && strings.Contains(e["last_error"].(string), "timed out")
	})
	// Three timeouts in a row close the connection; the node side sees it.
	select {
	case <-hungConn.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("hung node's connection was not closed after repeated timeouts")
	}
	testutil.WaitFor(t, "hung node marked down", 10*time.Second, func() bool {
		e := readStats(t, d.g.cfg.StatsFile)[hung.TubID()]
		return e != nil && e["up"] == false
	})
	if !strings.Contains(verbose.String(), `disconnect "hung" [`+hung.TubID()+`]`) {
		t.Errorf("no disconnect line for the hung node in:\n%s", verbose)
	}
	if got := hung.Calls(); got < 3 {
		t.Errorf("hung node was called %d times, want >= 3", got)
	}
	// Both ends of the hung node's connection are gone, and its calls.
	hungConn.Close()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base+2 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines %d, %d before the hung node came\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The healthy node kept being polled all along.
	if e := readStats(t, d.g.cfg.StatsFile)[healthy.TubID()]; e["up"] != true || e["last_error"] != "" {
		t.Errorf("healthy node: %v", e)
	}
}

func TestDisconnectMarksDown(t *testing.T) {
	d, verbose := startDaemon(t, Config{Interval: time.Second})
	n, nConn := fakenode.Connect(t, d.Furl, "leaver", fakenode.AnswerWith(sample))
	testutil.WaitFor(t, "connect line", 10*time.Second, func() bool {
		return strings.Contains(verbose.String(), `connect "leaver" [`+n.TubID()+`]`)
	})
	testutil.WaitFor(t, "node up", 10*time.Second, func() bool {
		e := readStats(t, d.g.cfg.StatsFile)[n.TubID()]
		return e != nil && e["up"] == true
	})
	nConn.Close()
	testutil.WaitFor(t, "node down", 10*time.Second, func() bool {
		e := readStats(t, d.g.cfg.StatsFile)[n.TubID()]
		return e != nil && e["up"] == false
	})
	if !strings.Contains(verbose.String(), `disconnect "leaver" [`+n.TubID()+`]`) {
		t.Errorf("no disconnect line in:\n%s", verbose)
	}
	if !regexp.MustCompile(`(?m)^round: 1 nodes polled, 1 ok, 0 failed, [0-9.]+[µm]?s$`).MatchString(verbose.String()) {
		t.Errorf("no per-round line (nodes polled, ok, failed, time) in:\n%s", verbose)
	}
	// The entry and its last sample stay: entries are never dropped.
	e := readStats(t, d.g.cfg.StatsFile)[n.TubID()]
	if e["stats"].(map[string]any)["counters"].(map[string]any)["storage_server.allocate"] != json.Number("12") {
		t.Errorf("last sample lost: %v", e)
	}
}

func TestReconnectReplacesOldConnection(t *testing.T) {
	d, _ := startDaemon(t, Config{Interval: time.Second})
	first, firstConn := fakenode.Connect(t, d.Furl, "one", fakenode.AnswerWith(sample))
	// Same identity, second connection.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	second := fakenode.New(t, fakenode.AnswerWith(sample))
	second.ID = first.ID
	conn, err := second.Attach(ctx, d.Furl, "two")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	select {
	case <-firstConn.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("old connection not closed when the same tub ID connected again")
	}
	testutil.WaitFor(t, "second connection polled", 10*time.Second, func() bool {
		e := readStats(t, d.g.cfg.StatsFile)[first.TubID()]
		return second.Calls() > 0 && e != nil && e["nickname"] == "two" && e["up"] == true
	})
	if n := len(readStats(t, d.g.cfg.StatsFile)); n != 1 {
		t.Errorf("%d entries, want 1 per tub ID", n)
	}
}

func TestBadRepliesRecordedNodeStaysPolled(t *testing.T) {
	// A generous timeout: a reply of 10,001 entries takes its time on a
	// busy machine, and it must be refused for its size, not time out.
	d, _ := startDaemon(t, Config{Interval: 500 * time.Millisecond, Timeout: 20 * time.Second})
	many := stats.Map{}
	for i := 0; i < 2001; i++ {
		many[string(rune('a'+i%26))+strings.Repeat("x", i/26)+".c"] = stats.Int(int64(i))
	}
	tooMany := stats.Snapshot{Counters: stats.SetOf(many)}
	badName := stats.Snapshot{Stats: stats.SetOf(stats.Map{"bad\xffname": stats.Int(1)})}
	ctrlName := stats.Snapshot{Stats: stats.SetOf(stats.Map{"bell\x07": stats.Int(1)})}
	longName := stats.Snapshot{Stats: stats.SetOf(stats.Map{strings.Repeat("n", 300): stats.Int(1)})}
	n, nConn := fakenode.Connect(t, d.Furl, "bad", fakenode.AnswerWith(tooMany))
	for _, c := range []struct {
		snap stats.Snapshot
		want string
	}{
		{tooMany, "limit is 2000"},
		{badName, "UTF-8"},
		{ctrlName, "control character"},
		{longName, "limit is 256"},
	} {
		n.SetAnswer(fakenode.AnswerWith(c.snap))
		testutil.WaitFor(t, "error "+c.want, 10*time.Second, func() bool {
			e := readStats(t, d.g.cfg.StatsFile)[n.TubID()]
			return e != nil && strings.Contains(e["last_error"].(string), c.want)
		})
	}
	// Still connected and polled: a good reply clears the error.
	n.SetAnswer(fakenode.AnswerWith(sample))
	testutil.WaitFor(t, "recovery", 10*time.Second, func() bool {
		e := readStats(t, d.g.cfg.StatsFile)[n.TubID()]
		return e != nil && e["last_error"] == "" && e["up"] == true
	})
	select {
	case <-nConn.Done():
		t.Fatal("a bad reply closed the connection")
	default:
	}
}

func TestOversizedMessageClosesOnlyThatNode(t *testing.T) {
	d, _ := startDaemon(t, Config{Interval: 500 * time.Millisecond})
	good, _ := fakenode.Connect(t, d.Furl, "good", fakenode.AnswerWith(sample))
	hugeStats := stats.Map{}
	for i := 0; i < 40000; i++ {
		hugeStats[strings.Repeat("h", 200)+string(rune('a'+i%26))+strings.Repeat("y", i/26)] = stats.Int(1)
	}
	huge := stats.Snapshot{Stats: stats.SetOf(hugeStats)}
	bad, badConn := fakenode.Connect(t, d.Furl, "huge", fakenode.AnswerWith(huge))
	select {
	case <-badConn.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("a reply over the message limit did not end the connection")
	}
	testutil.WaitFor(t, "error recorded", 10*time.Second, func() bool {
		e := readStats(t, d.g.cfg.StatsFile)[bad.TubID()]
		return e != nil && e["up"] == false && e["last_error"] != ""
	})
	goodCalls := good.Calls()
	testutil.WaitFor(t, "good node still polled", 10*time.Second, func() bool { return good.Calls() > goodCalls+1 })
}

func TestNaNBecomesNull(t *testing.T) {
	d, _ := startDaemon(t, Config{Interval: 500 * time.Millisecond})
	n, _ := fakenode.Connect(t, d.Furl, "nan", fakenode.Raw(fakenode.Names("a.nan", "b.inf"), 2, func(i int, v statsrpc.Value) {
		v.SetFloat([]float64{nan(), inf()}[i])
	}))
	testutil.WaitFor(t, "NaN written as null", 10*time.Second, func() bool {
		e := readStats(t, d.g.cfg.StatsFile)[n.TubID()]
		if e == nil {
			return false
		}
		s := e["stats"].(map[string]any)["stats"].(map[string]any)
		v, ok := s["a.nan"]
		w, ok2 := s["b.inf"]
		return ok && ok2 && v == nil && w == nil
	})
}

func TestUnwritableDirKeepsOldFile(t *testing.T) {
	if _, err := exec.LookPath("chattr"); err != nil {
		t.Skip("needs chattr (e2fsprogs) to make a directory unwritable for root")
	}
	var logs testutil.SyncBuffer
	d, _ := startDaemon(t, Config{Interval: 300 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	fakenode.Connect(t, d.Furl, "n", fakenode.AnswerWith(sample))
	testutil.WaitFor(t, "first write", 10*time.Second, func() bool { return len(readStats(t, d.g.cfg.StatsFile)) == 1 })
	before, _ := os.ReadFile(d.g.cfg.StatsFile)
	dir := filepath.Dir(d.g.cfg.StatsFile)
	if out, err := exec.Command("chattr", "+i", dir).CombinedOutput(); err != nil {
		t.Skipf("chattr +i not supported here: %v %s", err, out)
	}
	defer exec.Command("chattr", "-i", dir).Run()
	fails := d.Gatherer().Metrics().WriteFailures
	testutil.WaitFor(t, "a failed write", 10*time.Second, func() bool { return d.Gatherer().Metrics().WriteFailures > fails+1 })
	now, _ := os.ReadFile(d.g.cfg.StatsFile)
	if !bytes.Equal(before, now) {
		t.Fatal("stats.json changed while its directory was unwritable")
	}
	if !strings.Contains(logs.String(), "writing stats file failed") {
		t.Errorf("no log line for the failed write:\n%s", logs.String())
	}
	exec.Command("chattr", "-i", dir).Run()
	writes := d.Gatherer().Metrics().Writes
	testutil.WaitFor(t, "writes resume", 10*time.Second, func() bool { return d.Gatherer().Metrics().Writes > writes })
	// A write in progress has its temp file for a moment; a leaked one
	// stays for good.
	testutil.WaitFor(t, "no temp files left", 10*time.Second, func() bool {
		matches, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
		return len(matches) == 0
	})
}

func TestGoroutinesReturnAfterChurn(t *testing.T) {
	d, _ := startDaemon(t, Config{Interval: 200 * time.Millisecond})
	_, warm := fakenode.Connect(t, d.Furl, "warm", fakenode.AnswerWith(sample))
	warm.Close()
	time.Sleep(300 * time.Millisecond)
	base := runtime.NumGoroutine()
	// 200 connect/provide/disconnect cycles.
	for i := 0; i < 200; i++ {
		_, nConn := fakenode.Connect(t, d.Furl, "churn", fakenode.AnswerWith(sample))
		nConn.Close()
	}
	deadline := time.Now().Add(15 * time.Second)
	for runtime.NumGoroutine() > base+3 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines %d, baseline %d\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCorruptStatsFileRefused(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "stats.json")
	corrupt := []byte(`{"abc": {"timestamp": 1, "nickname": "x", "stats": {`)
	os.WriteFile(path, corrupt, 0o644)
	_, err := New(Config{StatsFile: path})
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "backup") {
		t.Fatalf("err = %v, want one naming %s and suggesting a backup", err, path)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, corrupt) {
		t.Fatal("corrupt file was changed")
	}
}

func TestLoadKeepsOrderAndMarksDown(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "stats.json")
	orig := `{"zzzz` + strings.Repeat("a", 28) + `": {"timestamp": 1.5, "nickname": "z", "stats": {"counters": {}, "stats": {}}},` +
		` "aaaa` + strings.Repeat("a", 28) + `": {"timestamp": 2, "nickname": "a", "stats": {"counters": {"c": 1}, "stats": {"s": null}}, "up": true}}`
	os.WriteFile(path, []byte(orig), 0o644)
	g, err := New(Config{StatsFile: path})
	if err != nil {
		t.Fatal(err)
	}
	f := g.File()
	if len(f.Nodes) != 2 || f.Nodes[0].Nickname != "z" || f.Nodes[1].Nickname != "a" {
		t.Fatalf("order not kept: %+v", f.Nodes)
	}
	if f.Nodes[1].Up {
		t.Error("a loaded node is up before it connects")
	}
	if err := g.Write(); err != nil {
		t.Fatal(err)
	}
	back, err := statsfile.Load(path)
	if err != nil || back.Nodes[1].Stats.Counters.Map()["c"] != stats.Int(1) {
		t.Fatalf("reload: %v %+v", err, back)
	}
}

func nan() float64 { z := 0.0; return z / z }
func inf() float64 { z := 0.0; return 1 / z }

// A node that fails the same way every round makes one warning, not one
// per round, and a line when it recovers.
func TestRepeatedFailureLoggedOnce(t *testing.T) {
	var logs testutil.SyncBuffer
	d, _ := startDaemon(t, Config{Interval: 100 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	n, _ := fakenode.Connect(t, d.Furl, "flaky", fakenode.Fail("disk on fire"))
	testutil.WaitFor(t, "five failed polls", 20*time.Second, func() bool { return d.Gatherer().PollErrors(n.TubID()) >= 5 })
	if c := strings.Count(logs.String(), "poll failed"); c != 1 {
		t.Errorf("%d warnings for 5 identical failures, want 1:\n%s", c, logs.String())
	}
	n.SetAnswer(fakenode.AnswerWith(sample))
	testutil.WaitFor(t, "recovery logged", 20*time.Second, func() bool {
		return strings.Contains(logs.String(), "polls succeed again")
	})
	n.SetAnswer(fakenode.Fail("disk on fire"))
	testutil.WaitFor(t, "a new failure warned again", 20*time.Second, func() bool {
		return strings.Count(logs.String(), "poll failed") == 2
	})
}

// A node is polled as soon as it provides, not at the next round.
func TestNewNodePolledAtOnce(t *testing.T) {
	d, _ := startDaemon(t, Config{Interval: time.Hour})
	time.Sleep(100 * time.Millisecond) // the first round (at start) is over
	n, _ := fakenode.Connect(t, d.Furl, "newcomer", fakenode.AnswerWith(sample))
	testutil.WaitFor(t, "the newcomer polled long before the next round", 10*time.Second, func() bool { return n.Calls() > 0 })
}

// However often rounds come, a node has at most one call in flight.
func TestOneCallInFlightPerNode(t *testing.T) {
	d, _ := startDaemon(t, Config{Interval: 50 * time.Millisecond, Timeout: 5 * time.Second, WriteAfter: 20 * time.Millisecond})
	hung, _ := fakenode.Connect(t, d.Furl, "hung", nil)
	rounds := d.Gatherer().Metrics().Rounds
	testutil.WaitFor(t, "ten rounds", 10*time.Second, func() bool { return d.Gatherer().Metrics().Rounds >= rounds+10 })
	if c := hung.Calls(); c != 1 {
		t.Fatalf("%d calls to a node whose first call has not returned, want 1", c)
	}
}

func TestParsePort(t *testing.T) {
	good := map[string]string{"tcp:3456": ":3456", "3456": ":3456", " tcp:0 ": ":0",
		"tcp:3456:interface=127.0.0.1": "127.0.0.1:3456", "tcp:1:interface=::1": "[::1]:1"}
	for in, want := range good {
		if got, err := ParsePort(in); err != nil || got != want {
			t.Errorf("ParsePort(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "tcp:", "tcp:x", "tcp:70000", "tcp:1:bind=x", "tcp:1:interface=", "udp:1"} {
		if _, err := ParsePort(bad); err == nil {
			t.Errorf("ParsePort(%q) succeeded", bad)
		}
	}
}

func TestCreateAcceptsEmptyDirRefusesOther(t *testing.T) {
	empty := t.TempDir()
	if err := Create(empty, CreateOptions{Hostname: "127.0.0.1"}); err != nil {
		t.Fatalf("an existing empty basedir: %v", err)
	}
	if err := Create(empty, CreateOptions{Hostname: "127.0.0.1"}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("creating over a gatherer: %v", err)
	}
}
