package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"capstats/stats"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
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

func bufLogger(level slog.Level) (*slog.Logger, *syncBuffer) {
	b := new(syncBuffer)
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: level})), b
}

func TestCountConcurrentExactTotal(t *testing.T) {
	p := NewProvider(ProviderOptions{Logger: quietLogger()})
	const goroutines, perG = 8, 20000
	names := []string{"storage_server.allocate", "storage_server.get", "storage_server.writev"}
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perG {
				p.Count(names[i%len(names)], 1)
				p.Count(fmt.Sprintf("own.%d", g), 2) // new names appear while others count
			}
		}()
	}
	wg.Wait()
	c := p.Snapshot(context.Background()).Counters.Map()
	var total int64
	for _, n := range names {
		total += c[n].Int()
	}
	if total != goroutines*perG {
		t.Fatalf("total %d, want %d (%v)", total, goroutines*perG, c)
	}
	for g := range goroutines {
		if got := c[fmt.Sprintf("own.%d", g)]; got != stats.Int(2*perG) {
			t.Fatalf("own.%d = %v, want %d", g, got, 2*perG)
		}
	}
	if got := c[ProducerErrorsCounter]; got != stats.Int(0) {
		t.Fatalf("%s = %v, want 0", ProducerErrorsCounter, got)
	}
}

func TestCountSeenNameAllocatesNothing(t *testing.T) {
	p := NewProvider(ProviderOptions{})
	p.Count("a.b", 1)
	if n := testing.AllocsPerRun(1000, func() { p.Count("a.b", 1) }); n != 0 {
		t.Fatalf("Count allocates %v per call for a name already seen", n)
	}
}

func TestRegisterRejectsNil(t *testing.T) {
	p := NewProvider(ProviderOptions{})
	var nilMon *LoadMonitor
	for _, pr := range []Producer{nil, ProducerFunc(nil), nilMon} {
		if err := p.Register(pr); !errors.Is(err, ErrNilProducer) {
			t.Errorf("Register(%#v) = %v, want ErrNilProducer", pr, err)
		}
	}
	if err := p.Register(ProducerFunc(func() stats.Map { return nil })); err != nil {
		t.Fatalf("Register(func) = %v", err)
	}
}

func TestMergeOrderLaterWins(t *testing.T) {
	p := NewProvider(ProviderOptions{})
	fixed := func(m stats.Map) Producer { return ProducerFunc(func() stats.Map { return m }) }
	must(t, p.Register(fixed(stats.Map{"a": stats.Int(1), "b": stats.Int(1)})))
	must(t, p.Register(fixed(stats.Map{"b": stats.Int(2), "c": stats.Null()})))
	must(t, p.Register(fixed(nil)))
	must(t, p.Register(fixed(stats.Map{"c": stats.Float(0.5)})))
	got := p.Snapshot(context.Background()).Stats
	want := stats.Map{"a": stats.Int(1), "b": stats.Int(2), "c": stats.Float(0.5)}
	if !got.Equal(stats.SetOf(want)) {
		t.Fatalf("stats %v, want %v", got, want)
	}
}

// A name two producers report is warned about once, naming both; the
// later producer's value is used.
func TestCollisionReportedOnce(t *testing.T) {
	log, logs := bufLogger(slog.LevelDebug)
	p := NewProvider(ProviderOptions{Logger: log})
	fixed := func(m stats.Map) Producer { return ProducerFunc(func() stats.Map { return m }) }
	must(t, p.Register(fixed(stats.Map{"a": stats.Int(1), "b": stats.Int(1)})))
	must(t, p.Register(fixed(stats.Map{"x": stats.Int(1)})))
	must(t, p.Register(fixed(stats.Map{"b": stats.Int(2), "c": stats.Int(3)})))
	for range 3 {
		if got := p.Snapshot(context.Background()).Stats.Map()["b"]; got != stats.Int(2) {
			t.Fatalf("b = %v, want the later producer's 2", got)
		}
	}
	out := logs.String()
	if n := strings.Count(out, "two stats producers report the same name"); n != 1 {
		t.Fatalf("%d collision warnings over 3 snapshots, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "name=b") || !strings.Contains(out, "#0") || !strings.Contains(out, "#2") {
		t.Fatalf("warning does not name the key and both producers:\n%s", out)
	}
	// Producers without a common name: no warning.
	log2, logs2 := bufLogger(slog.LevelDebug)
	q := NewProvider(ProviderOptions{Logger: log2})
	must(t, q.Register(fixed(stats.Map{"a": stats.Int(1)})))
	must(t, q.Register(fixed(stats.Map{"b": stats.Int(1)})))
	q.Snapshot(context.Background())
	if strings.Contains(logs2.String(), "same name") {
		t.Fatalf("warning without a collision:\n%s", logs2.String())
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestFailingProducers(t *testing.T) {
	log, logs := bufLogger(slog.LevelDebug)
	const timeout = 100 * time.Millisecond
	p := NewProvider(ProviderOptions{Logger: log, ProducerTimeout: timeout})
	release := make(chan struct{})
	var blockedCalls atomic.Int32
	must(t, p.Register(ProducerFunc(func() stats.Map { return stats.Map{"ok.first": stats.Int(1)} })))
	must(t, p.Register(ProducerFunc(func() stats.Map { panic("producer bug") })))
	must(t, p.Register(ProducerFunc(func() stats.Map {
		blockedCalls.Add(1)
		<-release
		return stats.Map{"slow.value": stats.Int(7)}
	})))
	must(t, p.Register(ProducerFunc(func() stats.Map { return stats.Map{"ok.last": stats.Int(2)} })))
	defer close(release)

	// The producer errors and the single call of the blocked producer
	// show what each round did; the durations are only bounds to give up
	// by (a snapshot that waited for the stuck producer would never end).
	check := func(round int, maxTook time.Duration, wantErrors int64, wantSlow bool) {
		t.Helper()
		start := time.Now()
		s := p.Snapshot(context.Background())
		took := time.Since(start)
		if took > maxTook {
			t.Errorf("round %d: snapshot took %v, want at most %v", round, took, maxTook)
		}
		if s.Stats.Map()["ok.first"] != stats.Int(1) || s.Stats.Map()["ok.last"] != stats.Int(2) {
			t.Errorf("round %d: healthy producers missing: %v", round, s.Stats)
		}
		if _, ok := s.Stats.Map()["slow.value"]; ok != wantSlow {
			t.Errorf("round %d: slow.value present=%v, want %v", round, ok, wantSlow)
		}
		if got := s.Counters.Map()[ProducerErrorsCounter]; got != stats.Int(wantErrors) {
			t.Errorf("round %d: %s = %v, want %d", round, ProducerErrorsCounter, got, wantErrors)
		}
	}
	// Round 1 waits for the blocked producer up to the timeout.
	check(1, timeout+30*time.Second, 2, false)
	// Round 2 skips it at once: its first call is still running.
	before := runtime.NumGoroutine()
	check(2, 30*time.Second, 4, false)
	check(3, 30*time.Second, 6, false)
	if n := blockedCalls.Load(); n != 1 {
		t.Errorf("blocked producer called %d times while stuck, want 1", n)
	}
	if after := runtime.NumGoroutine(); after > before+1 {
		t.Errorf("goroutines grew from %d to %d while a producer is stuck", before, after)
	}
	out := logs.String()
	for _, want := range []string{"panic: producer bug", "no answer within 100ms", "still running"} {
		if !bytes.Contains([]byte(out), []byte(want)) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	// One warning per failing producer; repeats are debug lines.
	if n := bytes.Count([]byte(out), []byte("level=WARN")); n != 2 {
		t.Errorf("%d warnings, want 2:\n%s", n, out)
	}
}

func TestBlockedProducerRecovers(t *testing.T) {
	p := NewProvider(ProviderOptions{Logger: quietLogger(), ProducerTimeout: 50 * time.Millisecond})
	release := make(chan struct{})
	must(t, p.Register(ProducerFunc(func() stats.Map {
		select {
		case <-release:
		default:
			<-release
		}
		return stats.Map{"slow.value": stats.Int(7)}
	})))
	if s := p.Snapshot(context.Background()); s.Counters.Map()[ProducerErrorsCounter] != stats.Int(1) {
		t.Fatalf("first snapshot: %v", s)
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := p.Snapshot(context.Background())
		if s.Stats.Map()["slow.value"] == stats.Int(7) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("producer never answered again: %v", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSnapshotHonoursContext(t *testing.T) {
	p := NewProvider(ProviderOptions{Logger: quietLogger(), ProducerTimeout: time.Hour})
	release := make(chan struct{})
	defer close(release)
	must(t, p.Register(ProducerFunc(func() stats.Map { <-release; return nil })))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	s := p.Snapshot(ctx)
	if took := time.Since(start); took > 30*time.Second {
		t.Fatalf("snapshot took %v past a 50ms context (its producer timeout is an hour)", took)
	}
	if s.Counters.Map()[ProducerErrorsCounter] != stats.Int(1) {
		t.Fatalf("abandoned producer not counted: %v", s.Counters)
	}
}

// Concurrent snapshots share a producer call that is within its time
// instead of counting it as stuck.
func TestConcurrentSnapshotsShareCall(t *testing.T) {
	p := NewProvider(ProviderOptions{Logger: quietLogger(), ProducerTimeout: 5 * time.Second})
	var calls atomic.Int32
	entered := make(chan struct{})
	release := make(chan struct{})
	must(t, p.Register(ProducerFunc(func() stats.Map {
		if calls.Add(1) == 1 {
			close(entered)
			<-release
		}
		return stats.Map{"v": stats.Int(1)}
	})))
	results := make(chan stats.Snapshot, 2)
	go func() { results <- p.Snapshot(context.Background()) }()
	<-entered
	go func() { results <- p.Snapshot(context.Background()) }()
	time.Sleep(20 * time.Millisecond) // let the second snapshot join
	close(release)
	for range 2 {
		s := <-results
		if s.Stats.Map()["v"] != stats.Int(1) || s.Counters.Map()[ProducerErrorsCounter] != stats.Int(0) {
			t.Fatalf("snapshot %v", s)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("producer called %d times, want 1", n)
	}
}

func BenchmarkCount(b *testing.B) {
	p := NewProvider(ProviderOptions{})
	for i := range 20 {
		p.Count(fmt.Sprintf("storage_server.counter%d", i), 1)
	}
	b.ReportAllocs()
	for b.Loop() {
		p.Count("storage_server.counter7", 1)
	}
}

func BenchmarkCountParallel(b *testing.B) {
	p := NewProvider(ProviderOptions{})
	for i := range 20 {
		p.Count(fmt.Sprintf("storage_server.counter%d", i), 1)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p.Count("storage_server.counter7", 1)
		}
	})
}

func BenchmarkAtomicAdd(b *testing.B) {
	var n int64
	b.ReportAllocs()
	for b.Loop() {
		atomic.AddInt64(&n, 1)
	}
}

func BenchmarkAtomicAddParallel(b *testing.B) {
	var n int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			atomic.AddInt64(&n, 1)
		}
	})
}

func BenchmarkSnapshot(b *testing.B) {
	p := NewProvider(ProviderOptions{})
	for i := range 50 {
		p.Count(fmt.Sprintf("storage_server.counter%d", i), 1)
	}
	must(b, p.Register(Uptime()))
	must(b, p.Register(NewCPUMonitor(CPUMonitorOptions{})))
	b.ReportAllocs()
	for b.Loop() {
		p.Snapshot(context.Background())
	}
}

func BenchmarkCounterHandleParallel(b *testing.B) {
	p := NewProvider(ProviderOptions{})
	c := p.Counter("storage_server.counter7")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Add(1)
		}
	})
}

// Each goroutine counts its own name, the common case of unrelated events
// on different goroutines; compare BenchmarkAtomicAddParallelOwn.
func BenchmarkCountParallelOwnName(b *testing.B) {
	p := NewProvider(ProviderOptions{})
	var next atomic.Int32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		name := fmt.Sprintf("storage_server.counter%d", next.Add(1))
		p.Count(name, 1)
		for pb.Next() {
			p.Count(name, 1)
		}
	})
}

func BenchmarkAtomicAddParallelOwn(b *testing.B) {
	var next atomic.Int32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		n := new(int64) // its own allocation, like a counter
		next.Add(1)
		for pb.Next() {
			atomic.AddInt64(n, 1)
		}
	})
}

// A node sends its names in the same order, in the same stats.Names, poll
// after poll, so that the gatherer reads them once; a new name changes them.
func TestSnapshotsShareNames(t *testing.T) {
	p := NewProvider(ProviderOptions{})
	must(t, p.Register(ProducerFunc(func() stats.Map { return stats.Map{"x.b": stats.Int(1), "x.a": stats.Int(2)} })))
	p.Count("c.one", 1)
	first := p.Snapshot(context.Background())
	p.Count("c.one", 1)
	second := p.Snapshot(context.Background())
	if first.Counters.Names() != second.Counters.Names() || first.Stats.Names() != second.Stats.Names() {
		t.Fatal("the same names in new Names")
	}
	if v, _ := second.Counters.Get("c.one"); v != stats.Int(2) {
		t.Fatalf("c.one = %v, want 2", v)
	}
	p.Count("c.two", 1)
	third := p.Snapshot(context.Background())
	if third.Counters.Names() == second.Counters.Names() {
		t.Fatal("a new counter kept the old Names")
	}
	if v, ok := third.Counters.Get("c.two"); !ok || v != stats.Int(1) {
		t.Fatalf("c.two = %v, %v; want 1", v, ok)
	}
}
