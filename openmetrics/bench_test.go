package openmetrics

import (
	"fmt"
	"io"
	"testing"

	"capstats/stats"
)

// benchNodes returns n nodes of 40 entries each, shaped like storage nodes:
// 10 counters, 23 gauges, 7 percentiles of one summary.
func benchNodes(n int) []Node {
	nodes := make([]Node, n)
	for i := range nodes {
		counters, sts := stats.Map{}, stats.Map{}
		for c := range 10 {
			counters[fmt.Sprintf("storage_server.counter_%d", c)] = stats.Int(int64(i * c))
		}
		for g := range 23 {
			sts[fmt.Sprintf("storage_server.gauge_%d", g)] = stats.Float(float64(i) / float64(g+1))
		}
		for _, p := range []string{"01_0", "10_0", "50_0", "90_0", "95_0", "99_0", "99_9"} {
			sts["storage_server.latencies.get."+p+"_percentile"] = stats.Float(0.001 * float64(i%7))
		}
		snap := stats.Snapshot{Counters: stats.SetOf(counters), Stats: stats.SetOf(sts)}
		nodes[i] = Node{
			Labels: NewLabelSet(Label{"tubid", fmt.Sprintf("%032d", i)}, Label{"nickname", fmt.Sprintf("storage-%d", i)}),
			Stats:  snap,
		}
	}
	return nodes
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// BenchmarkWriteNodes10k is /metrics for 10,000 nodes of 40 entries.
func BenchmarkWriteNodes10k(b *testing.B) {
	nodes := benchNodes(10000)
	var cw countingWriter
	b.ReportAllocs()
	for b.Loop() {
		cw.n = 0
		e := NewEncoder(&cw, OpenMetrics)
		WriteNodes(e, nodes)
		if err := e.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cw.n), "bytes/exposition")
	b.SetBytes(cw.n)
}

func BenchmarkWriteSnapshot(b *testing.B) {
	nodes := benchNodes(1)
	b.ReportAllocs()
	for b.Loop() {
		e := NewEncoder(io.Discard, OpenMetrics)
		WriteSnapshot(e, LabelSet{}, nodes[0].Stats)
		e.Close()
	}
}
