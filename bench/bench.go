// Package bench holds capstats' scale benchmarks and their harness: one
// gatherer in the benchmark process, providers in cmd/loadgen child
// processes, over mutual TLS on 127.0.0.1. See BENCHMARKS.md for the
// figures and scripts/bench.sh for how they are produced.
//
// The package itself only holds what the load generator and the tools under
// bench/cmd share with the benchmarks: the names and values a simulated node
// reports, and synthetic stats files.
package bench

import (
	"fmt"
	"time"

	"capstats/stats"
	"capstats/statsfile"
)

// CounterNames are the counters a simulated node reports, the first ones
// those a Tahoe storage node and upload helper report (and the munin graphs
// read). Snapshot makes up further names when more are asked for.
var CounterNames = []string{
	"storage_server.allocate", "storage_server.get", "storage_server.writev",
	"storage_server.readv", "storage_server.bytes_added", "storage_server.bytes_freed",
	"storage_server.add-lease", "storage_server.renew", "storage_server.cancel",
	"chk_upload_helper.upload_requests", "chk_upload_helper.upload_already_present",
	"chk_upload_helper.upload_need_upload", "chk_upload_helper.encoded_bytes",
	"chk_upload_helper.fetched_bytes", "uploader.bytes_uploaded", "uploader.files_uploaded",
	"mutable.files_published", "mutable.files_retrieved", "downloader.files_downloaded",
	"downloader.bytes_downloaded",
}

// StatNames are the stats a simulated node reports; one of them is null,
// as a percentile over too few samples is.
var StatNames = []string{
	"load_monitor.avg_load", "load_monitor.max_load", "cpu_monitor.1min_avg",
	"cpu_monitor.5min_avg", "cpu_monitor.15min_avg", "cpu_monitor.total", "node.uptime",
	"storage_server.allocated", "storage_server.consumed", "storage_server.disk_total",
	"storage_server.disk_used", "storage_server.disk_avail", "storage_server.disk_free_for_root",
	"storage_server.disk_free_for_nonroot", "storage_server.accepting_immutable_shares",
	"chk_upload_helper.active_uploads", "chk_upload_helper.incoming_count",
	"chk_upload_helper.incoming_size", "chk_upload_helper.encoding_count",
	"storage_server.latencies.get.99_9_percentile",
}

// nullStat is the stat that is always null.
const nullStat = "storage_server.latencies.get.99_9_percentile"

// Name returns the k-th name of a namespace: names[k], or past the end a
// made-up name of the same shape.
func Name(names []string, k int) string {
	if k < len(names) {
		return names[k]
	}
	return fmt.Sprintf("%s.%d", names[k%len(names)], k/len(names))
}

// Snapshot is what simulated node i reports: nCounters ints and nStats
// stats, a mix of floats, ints and one null.
func Snapshot(i, nCounters, nStats int) stats.Snapshot {
	counters, sts := make(stats.Map, nCounters), make(stats.Map, nStats)
	for k := range nCounters {
		counters[Name(CounterNames, k)] = stats.Int(int64(i*1009 + k*7919))
	}
	for k := range nStats {
		name := Name(StatNames, k)
		switch {
		case name == nullStat:
			sts[name] = stats.Null()
		case k%2 == 0:
			sts[name] = stats.Float(float64(i%97)/100 + float64(k)/7)
		default:
			sts[name] = stats.Int(int64(1_000_000*i + k))
		}
	}
	return stats.Snapshot{Counters: stats.SetOf(counters), Stats: stats.SetOf(sts)}
}

// SyntheticFile is a stats file of n up nodes of 20 counters and 20 stats
// each, answered at now, as a gatherer polling n loadgen providers writes
// it. Tub IDs are 32 base32 characters, nicknames like a loadgen's.
func SyntheticFile(n int, now time.Time) *statsfile.File {
	const b32 = "abcdefghijklmnopqrstuvwxyz234567"
	f := &statsfile.File{Nodes: make([]statsfile.Node, n)}
	at := float64(now.UnixNano()) / 1e9
	for i := range f.Nodes {
		var id [32]byte
		x := uint64(i)*0x9e3779b97f4a7c15 + 0x632be59bd9b4e019
		for k := range id {
			id[k] = b32[x%32]
			x = x*6364136223846793005 + 1442695040888963407
			x ^= x >> 29
		}
		f.Nodes[i] = statsfile.Node{
			TubID:       string(id[:]),
			Timestamp:   at - 0.5,
			Nickname:    fmt.Sprintf("loadgen-%d", i),
			Stats:       Snapshot(i, 20, 20),
			Up:          true,
			LastPoll:    at - 0.5001,
			PollSeconds: 0.000412,
		}
	}
	return f
}
