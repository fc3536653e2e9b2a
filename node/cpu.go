package node

import (
	"sync"
	"time"

	"capstats/internal/clock"
	"capstats/stats"
)

// CPUMonitor samples the process's CPU time every minute from the moment
// it starts, keeping 16 samples, and produces cpu_monitor.1min_avg,
// cpu_monitor.5min_avg and cpu_monitor.15min_avg (CPU seconds per wall
// second over the last 1, 5 and 15 samples' spans; 1.0 is one full core),
// each present only once N+1 samples exist, and cpu_monitor.total (CPU
// seconds the process has used).
type CPUMonitor struct {
	clock    clock.Clock
	cpu      func() (time.Duration, error) // the process's CPU time so far
	interval time.Duration

	mu      sync.Mutex
	samples []cpuSample // oldest first, at most cpuSamples

	run runner
}

type cpuSample struct {
	wall time.Time
	cpu  time.Duration
}

const (
	cpuInterval = 60 * time.Second
	cpuSamples  = 16
)

// CPUMonitorOptions configures a CPUMonitor; the zero value is usable.
type CPUMonitorOptions struct {
	// Interval between samples; 0 means 60 s.
	Interval time.Duration
}

// NewCPUMonitor returns a stopped monitor of the process's CPU time (user
// + system, from getrusage(RUSAGE_SELF)).
func NewCPUMonitor(opts CPUMonitorOptions) *CPUMonitor {
	if opts.Interval <= 0 {
		opts.Interval = cpuInterval
	}
	return &CPUMonitor{clock: clock.System, cpu: processCPUTime, interval: opts.Interval}
}

// Start takes the first sample now and then one per interval; later calls
// do nothing.
func (m *CPUMonitor) Start() { m.run.start(m.loop) }

// Stop ends sampling and waits for the loop; it is idempotent.
func (m *CPUMonitor) Stop() { m.run.halt() }

func (m *CPUMonitor) loop(stop <-chan struct{}) {
	for {
		m.sample()
		t := m.clock.NewTimer(m.interval)
		select {
		case <-stop:
			t.Stop()
			return
		case <-t.C():
		}
	}
}

func (m *CPUMonitor) sample() {
	cpu, err := m.cpu()
	if err != nil {
		return // no sample; the averages span what we have
	}
	now := m.clock.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.samples) == cpuSamples {
		copy(m.samples, m.samples[1:])
		m.samples = m.samples[:cpuSamples-1]
	}
	m.samples = append(m.samples, cpuSample{wall: now, cpu: cpu})
}

// Stats implements Producer.
func (m *CPUMonitor) Stats() stats.Map {
	out := make(stats.Map, 4)
	m.mu.Lock()
	for _, w := range [...]struct {
		n    int
		name string
	}{{1, "cpu_monitor.1min_avg"}, {5, "cpu_monitor.5min_avg"}, {15, "cpu_monitor.15min_avg"}} {
		if len(m.samples) < w.n+1 {
			continue
		}
		last, first := m.samples[len(m.samples)-1], m.samples[len(m.samples)-1-w.n]
		wall := last.wall.Sub(first.wall)
		if wall <= 0 {
			out[w.name] = stats.Null()
			continue
		}
		out[w.name] = stats.Float(float64(last.cpu-first.cpu) / float64(wall))
	}
	m.mu.Unlock()
	if cpu, err := m.cpu(); err == nil {
		out["cpu_monitor.total"] = stats.Float(cpu.Seconds())
	} else {
		out["cpu_monitor.total"] = stats.Null()
	}
	return out
}
