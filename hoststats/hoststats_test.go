package hoststats

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func writeProc(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFixture(t *testing.T) {
	dir := t.TempDir()
	writeProc(t, dir, map[string]string{
		"loadavg": "0.52 0.40 0.31 2/345 12345\n",
		"meminfo": "MemTotal:       16384000 kB\nMemFree:         1000000 kB\nMemAvailable:    8192000 kB\n",
		"stat":    "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 50 0 50 350 50 0 0 0 0 0\n",
		"uptime":  "1043.85 645.13\n",
	})
	h := New(dir)
	m := h.Stats()
	want := map[string]string{
		"host.load_1": "0.52", "host.load_5": "0.4", "host.load_15": "0.31",
		"host.memory_total_bytes": "16777216000", "host.memory_available_bytes": "8388608000",
		"host.cpu_busy_ratio": "0.2", "host.uptime_seconds": "1043.85",
	}
	for k, w := range want {
		if v, ok := m[k]; !ok || v.String() != w {
			t.Errorf("%s = %v (present %v), want %s", k, v, ok, w)
		}
	}
	if len(m) != len(want) {
		t.Errorf("%d stats: %v", len(m), m)
	}
	// The next snapshot's ratio covers only the time since the last: 300
	// busy of 400 jiffies.
	writeProc(t, dir, map[string]string{"stat": "cpu  250 0 250 800 100 0 0 0 0 0\n"})
	if v := h.Stats()["host.cpu_busy_ratio"]; v.String() != "0.75" {
		t.Errorf("second ratio %v, want 0.75", v)
	}
	// Nothing changed: no time passed, no ratio.
	if _, ok := h.Stats()["host.cpu_busy_ratio"]; ok {
		t.Error("a ratio over no time")
	}
}

func TestMissingProc(t *testing.T) {
	if m := New(filepath.Join(t.TempDir(), "nope")).Stats(); len(m) != 0 {
		t.Errorf("stats without /proc: %v", m)
	}
	dir := t.TempDir()
	writeProc(t, dir, map[string]string{"loadavg": "garbage\n", "meminfo": "MemTotal: lots\n", "stat": "cpu x y z w v\n", "uptime": "\n"})
	if m := New(dir).Stats(); len(m) != 0 {
		t.Errorf("stats from garbage: %v", m)
	}
}

func TestThisHost(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux's")
	}
	m := New("").Stats()
	for _, k := range []string{"host.load_1", "host.load_5", "host.load_15", "host.memory_total_bytes", "host.memory_available_bytes", "host.cpu_busy_ratio", "host.uptime_seconds"} {
		if _, ok := m[k]; !ok {
			t.Errorf("%s missing on this Linux host: %v", k, m)
		}
	}
	if r := m["host.cpu_busy_ratio"].Float(); r < 0 || r > 1 {
		t.Errorf("busy ratio %v", r)
	}
	if m["host.memory_available_bytes"].Int() > m["host.memory_total_bytes"].Int() {
		t.Errorf("more available than total: %v", m)
	}
}
