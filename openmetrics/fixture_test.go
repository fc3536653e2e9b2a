package openmetrics

import (
	"bytes"
	"testing"

	"capstats/stats"
)

// fixture has what real nodes report: counters, gauges of both kinds, nulls
// and Tahoe-LAFS's latency percentiles (with their mean and sample size),
// plus names that need sanitising and escaping.
var fixture = stats.Snapshot{
	Counters: stats.SetOf(stats.Map{
		"storage_server.allocate":    stats.Int(12),
		"storage_server.bytes_added": stats.Int(1 << 40),
		"storage_server.get":         stats.Int(7),
		"uploader.files_uploaded":    stats.Int(0),
		"node.producer_errors":       stats.Int(0),
		"downloader.bytes_total":     stats.Int(99),
		"never.set":                  stats.Null(),
	}),
	Stats: stats.SetOf(stats.Map{
		"load_monitor.avg_load":                           stats.Float(0.0125),
		"load_monitor.max_load":                           stats.Float(0.5),
		"cpu_monitor.1min_avg":                            stats.Float(0.03),
		"cpu_monitor.5min_avg":                            stats.Null(),
		"cpu_monitor.total":                               stats.Float(12.75),
		"node.uptime":                                     stats.Float(3600.5),
		"storage_server.disk_total":                       stats.Int(941088460800),
		"storage_server.disk_avail":                       stats.Int(131486851072),
		"storage_server.accepting_immutable_shares":       stats.Int(1),
		"storage_server.latencies.get.mean":               stats.Float(0.0021),
		"storage_server.latencies.get.samplesize":         stats.Int(1000),
		"storage_server.latencies.get.01_0_percentile":    stats.Float(0.0001),
		"storage_server.latencies.get.10_0_percentile":    stats.Float(0.0003),
		"storage_server.latencies.get.50_0_percentile":    stats.Float(0.001),
		"storage_server.latencies.get.90_0_percentile":    stats.Float(0.004),
		"storage_server.latencies.get.95_0_percentile":    stats.Float(0.006),
		"storage_server.latencies.get.99_0_percentile":    stats.Float(0.01),
		"storage_server.latencies.get.99_9_percentile":    stats.Null(),
		"storage_server.latencies.writev.99_9_percentile": stats.Null(),
		"weird name/with:chars\"and\\slashes":             stats.Int(3),
		"1st.thing":                                       stats.Int(1),
	}),
}

func render(t testing.TB, f Format, nodes []Node) []byte {
	t.Helper()
	var buf bytes.Buffer
	e := NewEncoder(&buf, f)
	WriteNodes(e, nodes)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func fixtureNodes() []Node {
	return []Node{
		{Labels: NewLabelSet(Label{"tubid", "aaaa"}, Label{"nickname", `storage "one"`}), Stats: fixture},
		{Labels: NewLabelSet(Label{"tubid", "bbbb"}, Label{"nickname", "two\nlines\\"}), Stats: stats.Snapshot{
			Counters: stats.SetOf(stats.Map{"storage_server.allocate": stats.Int(1)}),
			Stats:    stats.SetOf(stats.Map{"load_monitor.avg_load": stats.Null()}),
		}},
	}
}
