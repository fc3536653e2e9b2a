package nodehttp

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"capstats/openmetrics"
	"capstats/openmetrics/omtest"
	"capstats/stats"
)

var snap = stats.Snapshot{
	Counters: stats.SetOf(stats.Map{
		"storage_server.allocate": stats.Int(12),
		"node.producer_errors":    stats.Int(0),
	}),
	Stats: stats.SetOf(stats.Map{
		"load_monitor.avg_load": stats.Float(0.5),
		"node.uptime":           stats.Int(42),
		"cpu_monitor.total":     stats.Float(1.25),
		"storage_server.latencies.get.99_9_percentile": stats.Null(),
		"storage_server.latencies.get.50_0_percentile": stats.Float(0.002),
	}),
}

func server(t *testing.T, opts Options) (*httptest.Server, *atomic.Int64) {
	calls := new(atomic.Int64)
	s := httptest.NewServer(Handler(func(ctx context.Context) stats.Snapshot {
		calls.Add(1)
		if _, ok := ctx.Deadline(); !ok {
			t.Error("snapshot called without a deadline")
		}
		return snap
	}, opts))
	t.Cleanup(s.Close)
	return s, calls
}

func get(t *testing.T, url, accept string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func TestJSON(t *testing.T) {
	s, _ := server(t, Options{})
	for _, path := range []string{"/statistics?t=json", "/statistics"} {
		code, h, body := get(t, s.URL+path, "")
		want := `{
 "counters": {
  "node.producer_errors": 0,
  "storage_server.allocate": 12
 },
 "stats": {
  "cpu_monitor.total": 1.25,
  "load_monitor.avg_load": 0.5,
  "node.uptime": 42,
  "storage_server.latencies.get.50_0_percentile": 0.002,
  "storage_server.latencies.get.99_9_percentile": null
 }
}
`
		if code != 200 || h.Get("Content-Type") != "application/json" || body != want {
			t.Errorf("%s: %d %s\n%s", path, code, h.Get("Content-Type"), body)
		}
	}
}

func TestOpenMetrics(t *testing.T) {
	s, _ := server(t, Options{Labels: []openmetrics.Label{{Name: "nickname", Value: "storage-1"}}})
	code, h, body := get(t, s.URL+"/statistics?t=openmetrics", "")
	if code != 200 || h.Get("Content-Type") != openmetrics.ContentType {
		t.Fatalf("%d %s", code, h.Get("Content-Type"))
	}
	if err := omtest.Validate(strings.NewReader(body)); err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	for _, want := range []string{
		"# TYPE storage_server_allocate counter\nstorage_server_allocate_total{nickname=\"storage-1\"} 12\n",
		`storage_server_latencies_get{nickname="storage-1",quantile="0.999"} NaN` + "\n",
		`cpu_monitor_total_value{nickname="storage-1"} 1.25` + "\n",
		"# EOF\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("lacks %q:\n%s", want, body)
		}
	}
}

// /metrics negotiates: Prometheus gets OpenMetrics, curl and promtool the
// text format, which promtool finds clean.
func TestMetricsNegotiatedAndPromtoolClean(t *testing.T) {
	s, _ := server(t, Options{})
	_, h, body := get(t, s.URL+"/metrics", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
	if h.Get("Content-Type") != openmetrics.ContentType {
		t.Errorf("Content-Type %q", h.Get("Content-Type"))
	}
	if err := omtest.Validate(strings.NewReader(body)); err != nil {
		t.Error(err)
	}
	_, h, body = get(t, s.URL+"/metrics", "")
	if h.Get("Content-Type") != openmetrics.TextContentType {
		t.Errorf("Content-Type %q", h.Get("Content-Type"))
	}
	if problems := omtest.Promtool(t, []byte(body)); len(problems) > 0 {
		t.Errorf("promtool:\n%s\n%s", strings.Join(problems, "\n"), body)
	}
	if !strings.Contains(body, "storage_server_allocate_total 12\n") {
		t.Errorf("unlabelled sample missing:\n%s", body)
	}
}

func TestErrors(t *testing.T) {
	s, calls := server(t, Options{})
	for _, c := range []struct {
		method, path string
		code         int
	}{
		{"GET", "/statistics?t=html", 400},
		{"GET", "/", 404},
		{"POST", "/statistics", 405},
		{"HEAD", "/metrics", 200},
	} {
		req, _ := http.NewRequest(c.method, s.URL+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, resp.StatusCode, c.code)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("%d snapshots taken for requests that need none", n)
	}
}

// A slow producer does not hold a request past the timeout: the snapshot
// function gets a context that ends.
func TestSnapshotTimeout(t *testing.T) {
	s := httptest.NewServer(Handler(func(ctx context.Context) stats.Snapshot {
		<-ctx.Done()
		return stats.Snapshot{}
	}, Options{Timeout: 50 * time.Millisecond}))
	defer s.Close()
	start := time.Now()
	code, _, body := get(t, s.URL+"/statistics?t=json", "")
	// The snapshot blocks until its context ends: a bound to give up by.
	if code != 200 || time.Since(start) > 30*time.Second {
		t.Errorf("%d after %s", code, time.Since(start))
	}
	if body != "{\n \"counters\": {},\n \"stats\": {}\n}\n" {
		t.Errorf("empty snapshot: %q", body)
	}
}
