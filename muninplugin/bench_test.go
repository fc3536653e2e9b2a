package muninplugin

import (
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"capstats/stats"
	"capstats/statsfile"
)

// WriteBenchFile writes a stats file of n nodes with 20 counters and 20
// stats each (the storage and load stats the graphs show among them), all
// timestamped at now, and returns its path.
func writeBenchFile(tb testing.TB, n int, now time.Time) string {
	tb.Helper()
	f := &statsfile.File{}
	counters := []string{"storage_server.allocate", "storage_server.get", "storage_server.writev", "storage_server.readv",
		"storage_server.bytes_added", "storage_server.bytes_freed", "uploader.bytes_uploaded", "uploader.files_uploaded",
		"mutable.files_published", "mutable.files_retrieved"}
	statNames := []string{"load_monitor.avg_load", "load_monitor.max_load", "storage_server.allocated", "storage_server.consumed",
		"cpu_monitor.1min_avg", "cpu_monitor.5min_avg", "cpu_monitor.15min_avg", "cpu_monitor.total", "node.uptime",
		"storage_server.disk_avail"}
	ts := float64(now.UnixNano()) / 1e9
	for i := 0; i < n; i++ {
		c, s := stats.Map{}, stats.Map{}
		for j := 0; j < 20; j++ {
			cn, sn := counters[j%len(counters)], statNames[j%len(statNames)]
			if j >= 10 {
				cn, sn = fmt.Sprintf("extra.counter_%d", j), fmt.Sprintf("extra.stat_%d", j)
			}
			c[cn] = stats.Int(int64(i*1000 + j))
			s[sn] = stats.Float(float64(i) / float64(j+7))
		}
		f.Nodes = append(f.Nodes, statsfile.Node{
			TubID: fmt.Sprintf("%032x", i*7919), Nickname: fmt.Sprintf("storage node %d", i), Timestamp: ts - float64(i%400),
			Stats: stats.Snapshot{Counters: stats.SetOf(c), Stats: stats.SetOf(s)}, Up: true, LastPoll: ts, PollSeconds: 0.001,
		})
	}
	path := filepath.Join(tb.TempDir(), "stats.json")
	if err := statsfile.WriteFile(path, f); err != nil {
		tb.Fatal(err)
	}
	return path
}

// benchPlugin times one in-process plugin run (read the file, print) on a
// 1,000-node file. The whole process (exec, Go runtime start-up, this) is
// timed by cmd/tahoe_stats's BenchmarkProcess*.
func benchPlugin(b *testing.B, name, mode string, env ...string) {
	now := time.Unix(1700000000, 0)
	path := writeBenchFile(b, 1000, now)
	p := &Plugin{Name: name, Env: append([]string{"statsfile=" + path}, env...), Now: func() time.Time { return now }, Stdout: io.Discard}
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Run(mode); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPluginFetch1000(b *testing.B) { benchPlugin(b, "tahoe_storage_allocated", "") }

func BenchmarkPluginConfig1000(b *testing.B) { benchPlugin(b, "tahoe_storage_allocated", "config") }

func BenchmarkPluginMultigraphFetch1000(b *testing.B) {
	benchPlugin(b, "tahoe_multigraph", "", "MUNIN_CAP_MULTIGRAPH=1")
}

func BenchmarkPluginMultigraphDirtyconfig1000(b *testing.B) {
	benchPlugin(b, "tahoe_multigraph", "config", "MUNIN_CAP_MULTIGRAPH=1", "MUNIN_CAP_DIRTYCONFIG=1")
}
