package node

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"capstats/internal/clock/clocktest"
	"capstats/stats"
)

func near(v stats.Value, want float64) bool {
	return v.Kind() == stats.KindFloat && math.Abs(v.Float()-want) < 1e-9
}

func TestUptime(t *testing.T) {
	c := clocktest.New()
	u := uptime(c)
	c.Advance(90 * time.Second)
	if got := u.Stats()["node.uptime"]; !near(got, 90) {
		t.Fatalf("node.uptime = %v, want 90", got)
	}
}

func TestGoRuntime(t *testing.T) {
	s := GoRuntime().Stats()
	for _, k := range []string{"go.goroutines", "go.heap_bytes", "go.heap_sys_bytes", "go.gc_count", "go.gc_pause_total_seconds"} {
		if _, ok := s[k]; !ok {
			t.Errorf("missing %s in %v", k, s)
		}
	}
	if s["go.goroutines"].Int() < 1 || s["go.heap_bytes"].Int() <= 0 {
		t.Errorf("implausible: %v", s)
	}
}

func TestLoadMonitor(t *testing.T) {
	c := clocktest.New()
	log, logs := bufLogger(-8)
	m := newLoadMonitor(c, log)
	if s := m.Stats(); !near(s["load_monitor.avg_load"], 0) || !near(s["load_monitor.max_load"], 0) {
		t.Fatalf("without samples: %v", s)
	}
	m.Start()
	defer m.Stop()
	// Fire the 1 s timer late by these amounts.
	lates := []time.Duration{0, 500 * time.Millisecond, 100 * time.Millisecond, 1500 * time.Millisecond}
	for _, late := range lates {
		if d := c.WaitTimers(t, 1); d[0] != time.Second {
			t.Fatalf("timer set for %v, want 1s", d[0])
		}
		c.Advance(time.Second + late)
	}
	c.WaitTimers(t, 1) // the last sample is recorded
	s := m.Stats()
	if !near(s["load_monitor.avg_load"], (0+0.5+0.1+1.5)/4) || !near(s["load_monitor.max_load"], 1.5) {
		t.Fatalf("stats %v", s)
	}
	if out := logs.String(); strings.Count(out, "level=WARN") != 1 || !strings.Contains(out, "delay=1.5s") {
		t.Fatalf("want one warning for the 1.5 s delay, log:\n%s", out)
	}
	// Only the last 60 samples count: 60 punctual fires push the others out.
	for range 60 {
		c.WaitTimers(t, 1)
		c.Advance(time.Second)
	}
	c.WaitTimers(t, 1)
	if s := m.Stats(); !near(s["load_monitor.avg_load"], 0) || !near(s["load_monitor.max_load"], 0) {
		t.Fatalf("after 60 punctual samples: %v", s)
	}
	m.Stop()
	m.Stop()
}

func TestLoadMonitorStopBeforeStart(t *testing.T) {
	m := NewLoadMonitor(LoadMonitorOptions{Logger: quietLogger()})
	m.Stop()
	m.Start() // does nothing once stopped
	m.Stop()
}

// fakeCPU returns scripted CPU times, one per call, repeating the last.
type fakeCPU struct {
	mu     sync.Mutex
	values []time.Duration
	err    error
}

func (f *fakeCPU) now() (time.Duration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return 0, f.err
	}
	v := f.values[0]
	if len(f.values) > 1 {
		f.values = f.values[1:]
	}
	return v, nil
}

func (f *fakeCPU) set(v time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.values = []time.Duration{v}
}

func TestCPUMonitor(t *testing.T) {
	c := clocktest.New()
	cpu := &fakeCPU{values: []time.Duration{0}}
	m := NewCPUMonitor(CPUMonitorOptions{})
	m.clock, m.cpu = c, cpu.now
	m.Start()
	defer m.Stop()
	c.WaitTimers(t, 1) // the first sample, at start, is taken
	s := m.Stats()
	if len(s) != 1 || !near(s["cpu_monitor.total"], 0) {
		t.Fatalf("one sample: want only cpu_monitor.total, got %v", s)
	}
	// Minute i uses (i%4)*3 CPU seconds: 0, 3, 6, 9, 0, 3, ...
	var total time.Duration
	used := func(i int) time.Duration { return time.Duration(i%4) * 3 * time.Second }
	for i := 1; i <= 20; i++ {
		if d := c.WaitTimers(t, 1); d[0] != time.Minute {
			t.Fatalf("sampling every %v, want 1m", d[0])
		}
		total += used(i)
		cpu.set(total)
		c.Advance(time.Minute)
		c.WaitTimers(t, 1)
		s := m.Stats()
		avg := func(n int) float64 {
			var sum time.Duration
			for j := i - n + 1; j <= i; j++ {
				sum += used(j)
			}
			return sum.Seconds() / (float64(n) * 60)
		}
		for _, w := range []struct {
			n   int
			key string
		}{{1, "cpu_monitor.1min_avg"}, {5, "cpu_monitor.5min_avg"}, {15, "cpu_monitor.15min_avg"}} {
			got, ok := s[w.key]
			if i < w.n { // fewer than N+1 samples
				if ok {
					t.Fatalf("minute %d: %s present with %d samples: %v", i, w.key, i+1, got)
				}
				continue
			}
			if !near(got, avg(w.n)) {
				t.Fatalf("minute %d: %s = %v, want %v", i, w.key, got, avg(w.n))
			}
		}
		if !near(s["cpu_monitor.total"], total.Seconds()) {
			t.Fatalf("minute %d: total %v, want %v", i, s["cpu_monitor.total"], total.Seconds())
		}
	}
	m.mu.Lock()
	n := len(m.samples)
	m.mu.Unlock()
	if n != 16 {
		t.Fatalf("%d samples kept, want 16", n)
	}
	cpu.mu.Lock()
	cpu.err = errors.New("no rusage")
	cpu.mu.Unlock()
	if s := m.Stats(); !s["cpu_monitor.total"].IsNull() {
		t.Fatalf("total with failing getrusage: %v", s["cpu_monitor.total"])
	}
}

func TestCPUMonitorReal(t *testing.T) {
	m := NewCPUMonitor(CPUMonitorOptions{})
	s := m.Stats()
	if v := s["cpu_monitor.total"]; v.Kind() != stats.KindFloat || v.Float() <= 0 {
		t.Fatalf("cpu_monitor.total from getrusage = %v", v)
	}
}

func TestStorageMonitor(t *testing.T) {
	dir := t.TempDir()
	files := map[string]int{"a": 1000, "sub/b": 2345, "sub/deeper/c": 1, "empty": 0}
	want := 0
	for name, size := range files {
		p := filepath.Join(dir, name)
		must(t, os.MkdirAll(filepath.Dir(p), 0o700))
		must(t, os.WriteFile(p, make([]byte, size), 0o600))
		want += size
	}
	must(t, os.Symlink(filepath.Join(dir, "a"), filepath.Join(dir, "link"))) // not counted twice

	c := clocktest.New()
	m := NewStorageMonitor(dir, StorageOptions{Logger: quietLogger(), Reserved: 4096})
	m.clock = c
	if s := m.Stats(); !s["storage_server.consumed"].IsNull() {
		t.Fatalf("consumed before any scan: %v", s["storage_server.consumed"])
	}
	m.Start()
	defer m.Stop()
	if d := c.WaitTimers(t, 1); d[0] != DefaultScanInterval {
		t.Fatalf("rescan every %v, want %v", d[0], DefaultScanInterval)
	}
	s := m.Stats()
	if got := s["storage_server.consumed"]; got != stats.Int(int64(want)) {
		t.Fatalf("consumed = %v, want %d", got, want)
	}
	var st syscall.Statfs_t
	must(t, syscall.Statfs(dir, &st))
	total := int64(st.Blocks) * st.Frsize
	if s["storage_server.disk_total"] != stats.Int(total) {
		t.Errorf("disk_total = %v, want %d", s["storage_server.disk_total"], total)
	}
	used, root := s["storage_server.disk_used"].Int(), s["storage_server.disk_free_for_root"].Int()
	nonroot, avail := s["storage_server.disk_free_for_nonroot"].Int(), s["storage_server.disk_avail"].Int()
	if used+root != total || nonroot > root || avail != max(nonroot-4096, 0) || used < 0 {
		t.Errorf("inconsistent disk stats: %v", s)
	}

	// A new file shows after the next background scan, not on the poll.
	must(t, os.WriteFile(filepath.Join(dir, "new"), make([]byte, 500), 0o600))
	if got := m.Stats()["storage_server.consumed"]; got != stats.Int(int64(want)) {
		t.Fatalf("consumed changed without a scan: %v", got)
	}
	c.Advance(DefaultScanInterval)
	deadline := time.Now().Add(10 * time.Second)
	for m.Stats()["storage_server.consumed"] != stats.Int(int64(want+500)) {
		if time.Now().After(deadline) {
			t.Fatalf("rescan never counted the new file: %v", m.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}

func TestStorageMonitorFailures(t *testing.T) {
	m := NewStorageMonitor(filepath.Join(t.TempDir(), "missing"), StorageOptions{Logger: quietLogger()})
	if _, err := m.Scan(context.Background()); err == nil {
		t.Fatal("scan of a missing directory succeeded")
	}
	s := m.Stats()
	for _, k := range []string{"consumed", "disk_total", "disk_used", "disk_avail", "disk_free_for_root", "disk_free_for_nonroot"} {
		if v, ok := s["storage_server."+k]; !ok || !v.IsNull() {
			t.Errorf("storage_server.%s = %v (present %v), want null", k, v, ok)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := NewStorageMonitor(t.TempDir(), StorageOptions{}).Scan(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled scan: %v", err)
	}
}
