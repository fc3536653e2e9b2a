package web

import (
	"strings"
	"testing"
	"time"

	"capstats/internal/testutil"
	"capstats/openmetrics"
	"capstats/openmetrics/omtest"
)

// A live gatherer's /metrics, as curl and promtool get it (the Prometheus
// text format), has no parse error and no lint problem; as Prometheus gets
// it (OpenMetrics), it is valid OpenMetrics ending with # EOF.
func TestLiveMetricsPassPromtool(t *testing.T) {
	l := startLive(t, 200*time.Millisecond, HistoryOptions{})
	a := connect(t, l.d.Furl, "storage-a", storageSnap(0.01))
	b := connect(t, l.d.Furl, `quote " and \ backslash`, storageSnap(0.02))
	c := connect(t, l.d.Furl, "", storageSnap(0.03))
	var text string
	testutil.WaitFor(t, "three nodes with stats in /metrics", 15*time.Second, func() bool {
		text, _ = get(t, l.srv.URL+"/metrics", "")
		for _, n := range []*fakeNode{a, b, c} {
			if sampleLine(text, "load_monitor_avg_load", n.id.TubID()) == "" {
				return false
			}
		}
		return true
	})
	text, resp := get(t, l.srv.URL+"/metrics", "")
	if ct := resp.Header.Get("Content-Type"); ct != openmetrics.TextContentType {
		t.Errorf("Content-Type %q for a client without Accept, want %q", ct, openmetrics.TextContentType)
	}
	if problems := omtest.Promtool(t, []byte(text)); len(problems) > 0 {
		t.Fatalf("promtool check metrics:\n%s\n\n/metrics:\n%s", strings.Join(problems, "\n"), text)
	}
	for _, want := range []string{
		"# TYPE capstats_gatherer_rounds_total counter\n",
		"# TYPE capstats_gatherer_nodes_connected gauge\ncapstats_gatherer_nodes_connected 3\n",
		`capstats_up{tubid="` + a.id.TubID() + `",nickname="storage-a"} 1` + "\n",
		`capstats_poll_errors_total{tubid="` + b.id.TubID() + `",nickname="quote \" and \\ backslash"} 0` + "\n",
		`storage_server_latencies_get{tubid="` + a.id.TubID() + `",nickname="storage-a",quantile="0.999"} NaN` + "\n",
		`storage_server_allocate_total{tubid="` + c.id.TubID() + `",nickname=""} 12` + "\n",
		`cpu_monitor_15min_avg{tubid="` + c.id.TubID() + `",nickname=""} NaN` + "\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	om, resp := get(t, l.srv.URL+"/metrics", "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
	if ct := resp.Header.Get("Content-Type"); ct != openmetrics.ContentType {
		t.Errorf("Content-Type %q for Prometheus's Accept, want %q", ct, openmetrics.ContentType)
	}
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Error("/metrics not gzipped for a client that accepts gzip")
	}
	if err := omtest.Validate(strings.NewReader(om)); err != nil {
		t.Errorf("OpenMetrics output invalid: %v\n%s", err, om)
	}
	if !strings.HasSuffix(om, "\n# EOF\n") {
		t.Error("OpenMetrics output does not end with # EOF")
	}
	if !strings.Contains(om, "# TYPE capstats_gatherer_rounds counter\ncapstats_gatherer_rounds_total ") {
		t.Error("OpenMetrics counter not written as family foo, sample foo_total")
	}
}

// Health figures follow the connection: capstats_up goes to 0 once the
// gatherer sees a node's connection close, and its stats leave /metrics.
func TestLiveUpGoesToZeroAfterDisconnect(t *testing.T) {
	l := startLive(t, 200*time.Millisecond, HistoryOptions{})
	stay := connect(t, l.d.Furl, "stay", storageSnap(0.01))
	leave := connect(t, l.d.Furl, "leave", storageSnap(0.02))
	up := func(n *fakeNode) string {
		text, _ := get(t, l.srv.URL+"/metrics", "")
		return sampleLine(text, "capstats_up", n.id.TubID())
	}
	testutil.WaitFor(t, "both nodes up", 15*time.Second, func() bool {
		return strings.HasSuffix(up(stay), " 1") && strings.HasSuffix(up(leave), " 1")
	})
	leave.conn.Close()
	testutil.WaitFor(t, "capstats_up 0 for the node that left", 15*time.Second, func() bool {
		return strings.HasSuffix(up(leave), " 0")
	})
	text, _ := get(t, l.srv.URL+"/metrics", "")
	if l := sampleLine(text, "capstats_up", stay.id.TubID()); !strings.HasSuffix(l, " 1") {
		t.Errorf("the node that stayed: %q", l)
	}
	if l := sampleLine(text, "load_monitor_avg_load", leave.id.TubID()); l != "" {
		t.Errorf("stats of a node that is down still exported: %q", l)
	}
	if l := sampleLine(text, "capstats_last_sample_timestamp_seconds", leave.id.TubID()); l == "" {
		t.Error("the down node lost its last-sample timestamp")
	}
	if !strings.Contains(text, "capstats_gatherer_nodes_connected 1\n") || !strings.Contains(text, "capstats_gatherer_nodes 2\n") {
		t.Errorf("gatherer counts wrong:\n%s", text)
	}
	if problems := omtest.Promtool(t, []byte(text)); len(problems) > 0 {
		t.Errorf("promtool: %s", strings.Join(problems, "\n"))
	}
}
