package openmetrics

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"capstats/openmetrics/omtest"
	"capstats/stats"
)

var small = stats.Snapshot{
	Counters: stats.SetOf(stats.Map{"storage_server.allocate": stats.Int(12)}),
	Stats: stats.SetOf(stats.Map{
		"load_monitor.avg_load":                        stats.Float(0.5),
		"storage_server.latencies.get.99_9_percentile": stats.Null(),
		"storage_server.latencies.get.50_0_percentile": stats.Float(0.001),
	}),
}

func TestGoldenOpenMetrics(t *testing.T) {
	got := string(render(t, OpenMetrics, []Node{{Labels: NewLabelSet(Label{"tubid", "t1"}, Label{"nickname", `a "b"` + "\n\\"}), Stats: small}}))
	want := `# HELP load_monitor_avg_load Node stat load_monitor.avg_load.
# TYPE load_monitor_avg_load gauge
load_monitor_avg_load{tubid="t1",nickname="a \"b\"\n\\"} 0.5
# HELP storage_server_allocate Node counter storage_server.allocate.
# TYPE storage_server_allocate counter
storage_server_allocate_total{tubid="t1",nickname="a \"b\"\n\\"} 12
# HELP storage_server_latencies_get Node stats storage_server.latencies.get.NN_N_percentile, as quantiles.
# TYPE storage_server_latencies_get summary
storage_server_latencies_get{tubid="t1",nickname="a \"b\"\n\\",quantile="0.5"} 0.001
storage_server_latencies_get{tubid="t1",nickname="a \"b\"\n\\",quantile="0.999"} NaN
# EOF
`
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestGoldenPrometheusText(t *testing.T) {
	got := string(render(t, PrometheusText, []Node{{Stats: small}}))
	want := `# HELP load_monitor_avg_load Node stat load_monitor.avg_load.
# TYPE load_monitor_avg_load gauge
load_monitor_avg_load 0.5
# HELP storage_server_allocate_total Node counter storage_server.allocate.
# TYPE storage_server_allocate_total counter
storage_server_allocate_total 12
# HELP storage_server_latencies_get Node stats storage_server.latencies.get.NN_N_percentile, as quantiles.
# TYPE storage_server_latencies_get summary
storage_server_latencies_get{quantile="0.5"} 0.001
storage_server_latencies_get{quantile="0.999"} NaN
`
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestHelpEscapingPerFormat(t *testing.T) {
	snap := stats.Snapshot{Stats: stats.SetOf(stats.Map{"a\"b\\c\nd": stats.Int(1)})}
	om := string(render(t, OpenMetrics, []Node{{Stats: snap}}))
	if !strings.Contains(om, `# HELP a_b_c_d Node stat a\"b\\c\nd.`+"\n") {
		t.Errorf("OpenMetrics help not escaped:\n%s", om)
	}
	text := string(render(t, PrometheusText, []Node{{Stats: snap}}))
	if !strings.Contains(text, `# HELP a_b_c_d Node stat a"b\\c\nd.`+"\n") {
		t.Errorf("text help not escaped as 0.0.4 wants:\n%s", text)
	}
}

func TestValues(t *testing.T) {
	for _, c := range []struct {
		v    stats.Value
		want string
	}{
		{stats.Int(0), "0"},
		{stats.Int(-5), "-5"},
		{stats.Int(1 << 62), "4611686018427387904"},
		{stats.Float(0.1), "0.1"},
		{stats.Float(2), "2"},
		{stats.Float(1.7e9 + 0.25), "1.70000000025e+09"},
		{stats.Float(1e-7), "1e-07"},
		{stats.Null(), "NaN"},
	} {
		if got := string(AppendValue(nil, c.v)); got != c.want {
			t.Errorf("AppendValue(%v) = %s, want %s", c.v, got, c.want)
		}
	}
}

func TestEncoderRefusesClashes(t *testing.T) {
	var buf bytes.Buffer
	e := NewEncoder(&buf, OpenMetrics)
	ls := NewLabelSet()
	mustFamily := func(name string, typ Type, want bool) {
		t.Helper()
		if got := e.Family(name, typ, "h"); got != want {
			t.Fatalf("Family(%s, %v) = %v, want %v", name, typ, got, want)
		}
		e.Sample(ls, stats.Int(1))
	}
	mustFamily("x", Counter, true)
	mustFamily("x", Gauge, false)       // same name
	mustFamily("x_total", Gauge, false) // the counter's sample
	mustFamily("x_created", Gauge, false)
	mustFamily("s", Summary, true)
	mustFamily("s_count", Gauge, false)
	mustFamily("s_sum", Counter, false) // its family name is the summary's sample
	mustFamily("g_total", Gauge, true)
	mustFamily("g", Counter, false) // would own g_total
	mustFamily("bad-name", Gauge, false)
	mustFamily("1x", Gauge, false)
	mustFamily("", Gauge, false)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, unwanted := range []string{"# TYPE x gauge", "x_total 1\nx_total", "s_count", "bad-name", "# TYPE g counter"} {
		if strings.Contains(out, unwanted) {
			t.Errorf("output has %q:\n%s", unwanted, out)
		}
	}
	// x and g_total; s is a summary, which takes only Quantile.
	if n := strings.Count(out, " 1\n"); n != 2 {
		t.Errorf("%d samples written, want 2 (x, g_total):\n%s", n, out)
	}
	if err := omtest.Validate(strings.NewReader(out)); err != nil {
		t.Errorf("Validate: %v\n%s", err, out)
	}
	if e.Close() == nil {
		t.Error("second Close returned nil")
	}
}

func TestWriteNodesDropsClashesDuplicatesAndBadCounters(t *testing.T) {
	var buf bytes.Buffer
	e := NewEncoder(&buf, OpenMetrics)
	e.Family("capstats_up", Gauge, "Up.")
	e.Sample(NewLabelSet(), stats.Int(1))
	d := WriteNodes(e, []Node{{Stats: stats.Snapshot{
		Counters: stats.SetOf(stats.Map{
			"shared":   stats.Int(1),  // gauge "shared" sorts first and wins
			"nulled":   stats.Null(),  // invalid
			"negative": stats.Int(-1), // invalid
		}),
		Stats: stats.SetOf(stats.Map{
			"capstats.up": stats.Int(5), // clashes with the caller's family
			"shared":      stats.Int(2),
			"a.b":         stats.Int(3), // kept: "a.b" < "a_b"
			"a_b":         stats.Int(4),
		}),
	}}})
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if want := (Dropped{Clashes: 2, Duplicates: 1, Invalid: 2}); d != want {
		t.Errorf("dropped %+v, want %+v", d, want)
	}
	out := buf.String()
	for _, want := range []string{"capstats_up 1\n", "a_b 3\n", "shared 2\n", "# TYPE shared gauge\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, unwanted := range []string{"capstats_up 5", "a_b 4", "shared_total", "nulled", "negative"} {
		if strings.Contains(out, unwanted) {
			t.Errorf("output has %q:\n%s", unwanted, out)
		}
	}
	if err := omtest.Validate(strings.NewReader(out)); err != nil {
		t.Errorf("Validate: %v\n%s", err, out)
	}
}

func TestNodeOrderAndQuantileOrder(t *testing.T) {
	var nodes []Node
	for _, id := range []string{"n3", "n1", "n2"} {
		nodes = append(nodes, Node{Labels: NewLabelSet(Label{"tubid", id}), Stats: fixture})
	}
	out := string(render(t, OpenMetrics, nodes))
	i1 := strings.Index(out, `storage_server_latencies_get{tubid="n3",quantile="0.01"}`)
	i2 := strings.Index(out, `storage_server_latencies_get{tubid="n3",quantile="0.999"}`)
	i3 := strings.Index(out, `storage_server_latencies_get{tubid="n1",quantile="0.01"}`)
	if i1 < 0 || !(i1 < i2 && i2 < i3) {
		t.Errorf("samples not in node order, then quantile order:\n%s", out)
	}
	if err := omtest.Validate(strings.NewReader(out)); err != nil {
		t.Error(err)
	}
	// The same input always gives the same bytes.
	for range 5 {
		if again := string(render(t, OpenMetrics, nodes)); again != out {
			t.Fatal("output differs between runs")
		}
	}
}

func TestNegotiate(t *testing.T) {
	for _, c := range []struct {
		accept string
		want   Format
	}{
		{"", PrometheusText},
		{"*/*", PrometheusText},
		{"text/plain", PrometheusText},
		{"text/plain;version=0.0.4", PrometheusText},
		{"application/openmetrics-text", OpenMetrics},
		// What Prometheus 2.x sends.
		{"application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", OpenMetrics},
		{"text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.5", PrometheusText},
		{"application/openmetrics-text;q=0", PrometheusText},
		{"text/html,application/xhtml+xml", PrometheusText},
		{"Application/OpenMetrics-Text; Q=0.8, text/plain; q=0.2", OpenMetrics},
	} {
		if got := Negotiate(c.accept); got != c.want {
			t.Errorf("Negotiate(%q) = %v, want %v", c.accept, got, c.want)
		}
	}
	if OpenMetrics.ContentType() != "application/openmetrics-text; version=1.0.0; charset=utf-8" {
		t.Error(OpenMetrics.ContentType())
	}
}

func TestLabelSetRejectsBadNames(t *testing.T) {
	for _, name := range []string{"", "1a", "a-b", "quantile", "a:b"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewLabelSet(%q) did not panic", name)
				}
			}()
			NewLabelSet(Label{name, "v"})
		}()
	}
	ls := NewLabelSet(Label{"nickname", "bad\xffutf8"})
	if got := string(ls.b); got != "nickname=\"bad\uFFFDutf8\"" {
		t.Errorf("invalid UTF-8 not replaced: %q", got)
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	f.n++
	return 0, errors.New("client went away")
}

func TestWriteErrorStops(t *testing.T) {
	fw := &failWriter{}
	e := NewEncoder(fw, OpenMetrics)
	nodes := make([]Node, 2000)
	for i := range nodes {
		nodes[i] = Node{Labels: NewLabelSet(Label{"tubid", strings.Repeat("x", 32)}), Stats: fixture}
	}
	WriteNodes(e, nodes)
	if e.Err() == nil || e.Close() == nil {
		t.Fatal("write error not reported")
	}
	if fw.n != 1 {
		t.Errorf("%d writes after the first failure, want none", fw.n-1)
	}
}
