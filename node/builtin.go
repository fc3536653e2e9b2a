package node

import (
	"runtime"
	"time"

	"capstats/stats"
)

// Uptime returns a producer of node.uptime, the seconds elapsed since the
// call to Uptime, read from clock (nil means the system clock).
func Uptime(clock Clock) Producer {
	clock = clockOr(clock)
	start := clock.Now()
	return ProducerFunc(func() stats.Map {
		return stats.Map{"node.uptime": stats.Float(clock.Now().Sub(start).Seconds())}
	})
}

// GoRuntime returns a producer of Go runtime stats: go.goroutines,
// go.heap_bytes (bytes of live and not yet swept heap objects),
// go.heap_sys_bytes (heap memory obtained from the OS), go.gc_count
// (completed GC cycles) and go.gc_pause_total_seconds.
func GoRuntime() Producer {
	return ProducerFunc(func() stats.Map {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return stats.Map{
			"go.goroutines":             stats.Int(int64(runtime.NumGoroutine())),
			"go.heap_bytes":             stats.Int(int64(ms.HeapAlloc)),
			"go.heap_sys_bytes":         stats.Int(int64(ms.HeapSys)),
			"go.gc_count":               stats.Int(int64(ms.NumGC)),
			"go.gc_pause_total_seconds": stats.Float(time.Duration(ms.PauseTotalNs).Seconds()),
		}
	})
}

// RegisterBuiltins registers the producers every node reports: node.uptime
// (from now), a started CPUMonitor and GoRuntime. stop stops the CPU
// monitor. The load monitor is a Node's business (it runs only with a
// gatherer) and a StorageMonitor needs a directory: register those apart.
func RegisterBuiltins(p *Provider, clock Clock) (stop func(), err error) {
	cpu := NewCPUMonitor(&CPUMonitorOptions{Clock: clock})
	for _, pr := range []Producer{Uptime(clock), cpu, GoRuntime()} {
		if err := p.Register(pr); err != nil {
			return func() {}, err
		}
	}
	cpu.Start()
	return cpu.Stop, nil
}
