package node

import (
	"runtime"
	"time"

	"capstats/internal/clock"
	"capstats/stats"
)

// Uptime returns a producer of node.uptime, the seconds elapsed since the
// call to Uptime.
func Uptime() Producer { return uptime(clock.System) }

func uptime(c clock.Clock) Producer {
	start := c.Now()
	return ProducerFunc(func() stats.Map {
		return stats.Map{"node.uptime": stats.Float(c.Now().Sub(start).Seconds())}
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
// monitor. The load monitor is a Node's (Config.LoadMonitor: it runs
// only with a gatherer) and a StorageMonitor needs a directory: register
// those apart.
func RegisterBuiltins(p *Provider) (stop func()) {
	cpu := NewCPUMonitor(CPUMonitorOptions{})
	for _, pr := range []Producer{Uptime(), cpu, GoRuntime()} {
		p.Register(pr) // none is nil
	}
	cpu.Start()
	return cpu.Stop
}
