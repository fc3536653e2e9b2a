package node

import (
	"log/slog"
	"sync"
	"time"

	"capstats/internal/clock"
	"capstats/stats"
)

// LoadMonitor measures how late a timer set for every second fires, which
// is how busy the process is: load_monitor.avg_load and
// load_monitor.max_load are the mean and max of the last 60 delays in
// seconds (0 before the first sample). A delay over one second is logged as
// a warning. As in the original, a Node with Config.LoadMonitor runs one
// from the first time a gatherer is configured.
type LoadMonitor struct {
	clock    clock.Clock
	log      *slog.Logger
	interval time.Duration

	mu      sync.Mutex
	samples []float64 // ring of the last loadSamples delays
	next    int
	n       int

	run runner
}

const (
	loadInterval = time.Second
	loadSamples  = 60
	loadWarnOver = time.Second
)

// LoadMonitorOptions configures a LoadMonitor; the zero value is usable.
type LoadMonitorOptions struct {
	// Logger receives the warnings of excessive delay; nil means
	// slog.Default().
	Logger *slog.Logger
}

// NewLoadMonitor returns a stopped monitor.
func NewLoadMonitor(opts LoadMonitorOptions) *LoadMonitor {
	return newLoadMonitor(nil, opts.Logger)
}

func newLoadMonitor(c clock.Clock, log *slog.Logger) *LoadMonitor {
	if log == nil {
		log = slog.Default()
	}
	return &LoadMonitor{
		clock:    clock.Or(c),
		log:      log,
		interval: loadInterval,
		samples:  make([]float64, loadSamples),
	}
}

// Start starts the timer loop; later calls do nothing.
func (m *LoadMonitor) Start() { m.run.start(m.loop) }

// Stop ends the timer loop and waits for it; it is idempotent, and a
// monitor stopped before it started never starts.
func (m *LoadMonitor) Stop() { m.run.halt() }

func (m *LoadMonitor) loop(stop <-chan struct{}) {
	last := m.clock.Now()
	for {
		t := m.clock.NewTimer(m.interval)
		select {
		case <-stop:
			t.Stop()
			return
		case <-t.C():
		}
		now := m.clock.Now()
		delay := max(now.Sub(last)-m.interval, 0)
		last = now
		if delay > loadWarnOver {
			m.log.Warn("excessive delay of the load monitor's timer", "delay", delay)
		}
		m.add(delay.Seconds())
	}
}

func (m *LoadMonitor) add(d float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.samples[m.next] = d
	m.next = (m.next + 1) % len(m.samples)
	if m.n < len(m.samples) {
		m.n++
	}
}

// Stats implements Producer.
func (m *LoadMonitor) Stats() stats.Map {
	m.mu.Lock()
	defer m.mu.Unlock()
	var sum, mx float64
	for i := 0; i < m.n; i++ {
		s := m.samples[i]
		sum += s
		mx = max(mx, s)
	}
	avg := 0.0
	if m.n > 0 {
		avg = sum / float64(m.n)
	}
	return stats.Map{
		"load_monitor.avg_load": stats.Float(avg),
		"load_monitor.max_load": stats.Float(mx),
	}
}
