// Package hoststats is a node.Producer of the host's own figures, for a
// node that runs beside a service: what the machine is doing, rather than
// what the node's process is doing (cpu_monitor.*, load_monitor.*).
//
//   - host.load_1, host.load_5, host.load_15: the kernel's load averages;
//   - host.memory_total_bytes, host.memory_available_bytes: MemTotal and
//     MemAvailable (memory that can be had without swapping);
//   - host.cpu_busy_ratio: the share of all CPUs' time spent neither idle
//     nor waiting for I/O since the previous snapshot (since boot on the
//     first), 0 to 1;
//   - host.uptime_seconds: seconds since boot.
//
// They are read from Linux's /proc with the standard library. Elsewhere, or
// where /proc cannot be read, the names are absent: a figure that cannot be
// read is left out, never reported as 0.
package hoststats

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"capstats/stats"
)

// Host is the producer. Create one with New.
type Host struct {
	proc string

	mu             sync.Mutex
	lastBusy, last uint64 // jiffies at the previous snapshot
}

// New returns a producer reading the /proc file system mounted at proc
// ("" means "/proc").
func New(proc string) *Host {
	if proc == "" {
		proc = "/proc"
	}
	return &Host{proc: proc}
}

// Stats reads the figures.
func (h *Host) Stats() stats.Map {
	m := stats.Map{}
	h.load(m)
	h.memory(m)
	h.cpu(m)
	h.uptime(m)
	return m
}

func (h *Host) read(name string) []byte {
	b, err := os.ReadFile(filepath.Join(h.proc, name))
	if err != nil {
		return nil
	}
	return b
}

func (h *Host) load(m stats.Map) {
	f := strings.Fields(string(h.read("loadavg")))
	if len(f) < 3 {
		return
	}
	for i, name := range []string{"host.load_1", "host.load_5", "host.load_15"} {
		if v, err := strconv.ParseFloat(f[i], 64); err == nil {
			m[name] = stats.Float(v)
		}
	}
}

func (h *Host) memory(m stats.Map) {
	sc := bufio.NewScanner(bytes.NewReader(h.read("meminfo")))
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var name string
		switch key {
		case "MemTotal":
			name = "host.memory_total_bytes"
		case "MemAvailable":
			name = "host.memory_available_bytes"
		default:
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 2 && f[1] == "kB" {
			if v, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				m[name] = stats.Int(v * 1024)
			}
		}
	}
}

func (h *Host) cpu(m stats.Map) {
	b := h.read("stat")
	line, _, _ := bytes.Cut(b, []byte{'\n'})
	f := strings.Fields(string(line))
	// cpu user nice system idle iowait irq softirq steal guest guest_nice;
	// guest time is already counted in user and nice.
	if len(f) < 5 || f[0] != "cpu" {
		return
	}
	var total, idle uint64
	for i, s := range f[1:] {
		if i >= 8 {
			break
		}
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return
		}
		total += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	busy := total - idle
	h.mu.Lock()
	dBusy, dTotal := busy-h.lastBusy, total-h.last
	if busy < h.lastBusy || total < h.last {
		dBusy, dTotal = busy, total // a counter went back: since boot
	}
	h.lastBusy, h.last = busy, total
	h.mu.Unlock()
	if dTotal > 0 {
		m["host.cpu_busy_ratio"] = stats.Float(float64(dBusy) / float64(dTotal))
	}
}

func (h *Host) uptime(m stats.Map) {
	f := strings.Fields(string(h.read("uptime")))
	if len(f) < 1 {
		return
	}
	if v, err := strconv.ParseFloat(f[0], 64); err == nil {
		m["host.uptime_seconds"] = stats.Float(v)
	}
}
