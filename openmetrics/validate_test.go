package openmetrics

import (
	"strings"
	"testing"

	"capstats/openmetrics/omtest"
	"capstats/stats"
)

func TestValidateAcceptsWhatWeWrite(t *testing.T) {
	if err := omtest.Validate(strings.NewReader(string(render(t, OpenMetrics, fixtureNodes())))); err != nil {
		t.Fatal(err)
	}
}

// FuzzWriteNodes: whatever names and values nodes send, the output is valid
// OpenMetrics.
func FuzzWriteNodes(f *testing.F) {
	f.Add("storage_server.latencies.get.99_9_percentile", "storage_server.latencies.get.count", "x.total", "nick\"\n", 1.5, int64(3))
	f.Add("a.b", "a_b", "a", "", -1.0, int64(-2))
	f.Fuzz(func(t *testing.T, n1, n2, n3, nick string, fv float64, iv int64) {
		snap := stats.Snapshot{
			Counters: stats.SetOf(stats.Map{n1: stats.Int(iv), n2: stats.Float(fv), n3: stats.Null()}),
			Stats:    stats.SetOf(stats.Map{n1: stats.Float(fv), n2: stats.Int(iv), n3: stats.Null()}),
		}
		nodes := []Node{
			{Labels: NewLabelSet(Label{"tubid", "t1"}, Label{"nickname", nick}), Stats: snap},
			{Labels: NewLabelSet(Label{"tubid", "t2"}, Label{"nickname", nick}), Stats: snap},
		}
		out := render(t, OpenMetrics, nodes)
		if err := omtest.Validate(strings.NewReader(string(out))); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	})
}
