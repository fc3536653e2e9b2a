package openmetrics_test

import (
	"bytes"
	"strings"
	"testing"

	"capstats/openmetrics"
	"capstats/openmetrics/omtest"
	"capstats/stats"
)

// The fixture of fixture_test.go, seen from outside the package: counters,
// gauges, nulls, percentile names, names that need sanitising.
func promFixture(quotes bool) []openmetrics.Node {
	st := stats.Map{
		"load_monitor.avg_load":                        stats.Float(0.0125),
		"cpu_monitor.1min_avg":                         stats.Float(0.03),
		"cpu_monitor.5min_avg":                         stats.Null(),
		"cpu_monitor.total":                            stats.Float(12.75),
		"node.uptime":                                  stats.Float(3600.5),
		"storage_server.disk_total":                    stats.Int(941088460800),
		"storage_server.disk_avail":                    stats.Int(131486851072),
		"storage_server.accepting_immutable_shares":    stats.Int(1),
		"storage_server.latencies.get.mean":            stats.Float(0.0021),
		"storage_server.latencies.get.samplesize":      stats.Int(1000),
		"storage_server.latencies.get.01_0_percentile": stats.Float(0.0001),
		"storage_server.latencies.get.50_0_percentile": stats.Float(0.001),
		"storage_server.latencies.get.99_0_percentile": stats.Float(0.01),
		"storage_server.latencies.get.99_9_percentile": stats.Null(),
		"queue.count":                                  stats.Int(4),
		"1st.thing":                                    stats.Int(1),
	}
	if quotes {
		st["weird name/with:chars\"and\\slashes"] = stats.Int(3)
	}
	snap := stats.Snapshot{
		Counters: stats.SetOf(stats.Map{
			"storage_server.allocate":    stats.Int(12),
			"storage_server.bytes_added": stats.Int(1 << 40),
			"downloader.bytes_total":     stats.Int(99),
			"never.set":                  stats.Null(),
		}),
		Stats: stats.SetOf(st),
	}
	return []openmetrics.Node{
		{Labels: openmetrics.NewLabelSet(openmetrics.Label{Name: "tubid", Value: "aaaa"}, openmetrics.Label{Name: "nickname", Value: `storage "one"` + "\n\\"}), Stats: snap},
		{Labels: openmetrics.NewLabelSet(openmetrics.Label{Name: "tubid", Value: "bbbb"}, openmetrics.Label{Name: "nickname", Value: "1st"}), Stats: snap},
	}
}

func write(t *testing.T, f openmetrics.Format, nodes []openmetrics.Node) []byte {
	t.Helper()
	var buf bytes.Buffer
	e := openmetrics.NewEncoder(&buf, f)
	e.Family("capstats_gatherer_rounds", openmetrics.Counter, "Poll rounds run.")
	e.Sample(openmetrics.NewLabelSet(), stats.Int(3))
	openmetrics.WriteNodes(e, nodes)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// The Prometheus text format, which is what promtool reads, is clean: no
// parse error and no lint problem at all.
func TestPromtoolTextFormatIsClean(t *testing.T) {
	out := write(t, openmetrics.PrometheusText, promFixture(true))
	if problems := omtest.Promtool(t, out); len(problems) > 0 {
		t.Fatalf("promtool check metrics:\n%s\n\ninput:\n%s", strings.Join(problems, "\n"), out)
	}
}

// promtool reads OpenMetrics as if it were the 0.0.4 text format, where a
// counter's metadata must name its _total sample; so on OpenMetrics it can
// only ever say that each counter's sample has "no help text" (and it cannot
// read OpenMetrics's \" escape in # HELP, hence no quotes in this fixture).
// Anything else it says is a real problem.
func TestPromtoolOpenMetricsOnlyCounterHelp(t *testing.T) {
	out := write(t, openmetrics.OpenMetrics, promFixture(false))
	if err := omtest.Validate(bytes.NewReader(out)); err != nil {
		t.Fatal(err)
	}
	for _, p := range omtest.Promtool(t, out) {
		name, ok := strings.CutSuffix(p, " no help text")
		if !ok || !strings.HasSuffix(name, "_total") || !bytes.Contains(out, []byte("# TYPE "+strings.TrimSuffix(name, "_total")+" counter\n")) {
			t.Errorf("promtool: %s", p)
		}
	}
}
