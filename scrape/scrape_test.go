package scrape

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"capstats/node"
	"capstats/stats"
)

func tahoeFixture(t testing.TB) []byte {
	b, err := os.ReadFile("testdata/tahoe-statistics.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tahoeServer answers as Tahoe-LAFS's web port does: text/plain.
func tahoeServer(t testing.TB, body func() []byte) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/statistics" || r.URL.Query().Get("t") != "json" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body())
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestParseTahoe(t *testing.T) {
	res, f, err := Parse(tahoeFixture(t), "text/plain", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if f != FormatTahoe {
		t.Errorf("format %q", f)
	}
	want := map[string]string{
		"counters storage_server.allocate":                        "1841",
		"counters uploader.files_uploaded":                        "17",
		"counters storage_server.add-lease":                       "3",
		"stats storage_server.disk_total":                         "982141542400",
		"stats storage_server.allocated":                          "0",
		"stats cpu_monitor.total":                                 "812.44",
		"stats storage_server.latencies.writev.mean":              "null",
		"stats storage_server.latencies.writev.99_9_percentile":   "null",
		"stats storage_server.latencies.allocate.99_9_percentile": "0.15",
		"stats storage_server.latencies.allocate.samplesize":      "1000",
		"stats storage_server.accepting_immutable_shares":         "1",
		"stats chk_upload_helper.encoding_size_old":               "0",
		"stats storage_server.latencies.allocate.01_0_percentile": "0.0003",
		"stats storage_server.latencies.allocate.50_0_percentile": "0.0012",
		"stats storage_server.latencies.allocate.mean":            "0.0021",
		"stats storage_server.reserved_space":                     "1000000000",
		"stats node.uptime":                                       "86402.5",
		"counters chk_upload_helper.upload_already_present":       "1",
		"stats storage_server.latencies.writev.samplesize":        "1",
		"stats storage_server.latencies.allocate.95_0_percentile": "0.0062",
		"stats load_monitor.max_load":                             "0.25",
		"counters storage_server.bytes_freed":                     "1048576",
		"stats storage_server.total_bucket_count":                 "3120",
		"stats chk_upload_helper.active_uploads":                  "2",
		"stats storage_server.disk_avail":                         "518824681984",
		"counters mutable.files_retrieved":                        "22",
		"stats storage_server.latencies.allocate.10_0_percentile": "0.0005",
		"stats storage_server.latencies.writev.10_0_percentile":   "null",
		"stats storage_server.disk_used":                          "412316860416",
		"counters downloader.bytes_downloaded":                    "2097152",
	}
	for k, w := range want {
		ns, name, _ := strings.Cut(k, " ")
		m := res.Stats
		if ns == "counters" {
			m = res.Counters
		}
		v, ok := m[name]
		if !ok || v.String() != w {
			t.Errorf("%s = %v (present %v), want %s", k, v, ok, w)
		}
		if w != "null" && !strings.Contains(w, ".") && v.Kind() != stats.KindInt {
			t.Errorf("%s is not an int", k)
		}
	}
	if len(res.Counters) != 21 || len(res.Stats) != 41 {
		t.Errorf("%d counters, %d stats; want 21 and 41", len(res.Counters), len(res.Stats))
	}
	if _, ok := res.Stats["storage_server.allocate"]; ok {
		t.Error("a counter landed in stats")
	}
}

func TestParseTahoeBroken(t *testing.T) {
	for _, body := range []string{`{"counters": {"a": 1}`, `{"counters": {"a": "x"}, "stats": {}}`, `{`} {
		if _, _, err := Parse([]byte(body), "text/plain", "", 0); err == nil {
			t.Errorf("%q parsed", body)
		}
	}
	// Python's NaN reads as null.
	res, _, err := Parse([]byte(`{"counters": {}, "stats": {"x": NaN, "y": 2}}`), "text/plain", "", 0)
	if err != nil || !res.Stats["x"].IsNull() || res.Stats["y"].Int() != 2 {
		t.Errorf("NaN: %v %v", res, err)
	}
}

const promText = `# HELP node_load1 1m load average.
# TYPE node_load1 gauge
node_load1 0.42
# HELP node_context_switches_total Total number of context switches.
# TYPE node_context_switches_total counter
node_context_switches_total 1.234567e+06
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu="0",mode="idle"} 3541.75
node_cpu_seconds_total{mode="user",cpu="1"} 12.5
# TYPE node_filesystem_avail_bytes gauge
node_filesystem_avail_bytes{device="/dev/sda1",fstype="ext4",mountpoint="/"} 1e+10
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{method="get",quantile="0.5"} 0.012
rpc_duration_seconds{method="get",quantile="0.99"} 0.2
rpc_duration_seconds{method="get",quantile="0.999"} 0.5
rpc_duration_seconds_sum{method="get"} 12.5
rpc_duration_seconds_count{method="get"} 1000
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.1"} 90
http_request_duration_seconds_bucket{le="0.5"} 99
http_request_duration_seconds_bucket{le="+Inf"} 100
http_request_duration_seconds_sum 7
http_request_duration_seconds_count 100
some_untyped_value 7
`

func TestParsePrometheusText(t *testing.T) {
	res, f, err := Parse([]byte(promText), "text/plain; version=0.0.4; charset=utf-8", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if f != FormatText {
		t.Errorf("format %q", f)
	}
	checkProm(t, res, "")
}

func checkProm(t *testing.T, res Result, prefix string) {
	t.Helper()
	wantStats := map[string]string{
		"node_load1": "0.42",
		"node_filesystem_avail_bytes.device__dev_sda1.fstype_ext4.mountpoint__": "1e+10",
		"rpc_duration_seconds.method_get.50_0_percentile":                       "0.012",
		"rpc_duration_seconds.method_get.99_0_percentile":                       "0.2",
		"rpc_duration_seconds.method_get.99_9_percentile":                       "0.5",
		"rpc_duration_seconds_sum.method_get":                                   "12.5",
		"rpc_duration_seconds.method_get.mean":                                  "0.0125",
		"http_request_duration_seconds_sum":                                     "7.0",
		"http_request_duration_seconds.mean":                                    "0.07",
		"some_untyped_value":                                                    "7.0",
	}
	wantCounters := map[string]string{
		"node_context_switches_total":                  "1234567",
		"node_cpu_seconds_total.cpu_0.mode_idle":       "3541",
		"node_cpu_seconds_total.cpu_1.mode_user":       "12",
		"rpc_duration_seconds_count.method_get":        "1000",
		"http_request_duration_seconds_count":          "100",
		"http_request_duration_seconds_bucket.le_0_1":  "90",
		"http_request_duration_seconds_bucket.le_0_5":  "99",
		"http_request_duration_seconds_bucket.le__Inf": "100",
	}
	for name, w := range wantStats {
		if v, ok := res.Stats[prefix+name]; !ok || v.String() != w {
			t.Errorf("stat %s = %v (present %v), want %s", prefix+name, v, ok, w)
		}
	}
	for name, w := range wantCounters {
		if v, ok := res.Counters[prefix+name]; !ok || v.String() != w || v.Kind() != stats.KindInt {
			t.Errorf("counter %s = %v (present %v), want int %s", prefix+name, v, ok, w)
		}
	}
	if len(res.Stats) != len(wantStats) || len(res.Counters) != len(wantCounters) {
		t.Errorf("got %d stats %v and %d counters %v", len(res.Stats), res.Stats, len(res.Counters), res.Counters)
	}
}

func TestParseOpenMetrics(t *testing.T) {
	om := `# TYPE node_load1 gauge
node_load1 0.42
# TYPE node_context_switches counter
node_context_switches_total 1234567.0
node_context_switches_created 1.7e9
# TYPE node_cpu_seconds counter
node_cpu_seconds_total{cpu="0",mode="idle"} 3541.75
node_cpu_seconds_total{mode="user",cpu="1"} 12.5
# TYPE node_filesystem_avail_bytes gauge
node_filesystem_avail_bytes{device="/dev/sda1",fstype="ext4",mountpoint="/"} 1e+10
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{method="get",quantile="0.5"} 0.012
rpc_duration_seconds{method="get",quantile="0.99"} 0.2
rpc_duration_seconds{method="get",quantile="0.999"} 0.5
rpc_duration_seconds_sum{method="get"} 12.5
rpc_duration_seconds_count{method="get"} 1000
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.1"} 90
http_request_duration_seconds_bucket{le="0.5"} 99
http_request_duration_seconds_bucket{le="+Inf"} 100
http_request_duration_seconds_sum 7
http_request_duration_seconds_count 100
# TYPE some_untyped_value unknown
some_untyped_value 7
# EOF
`
	res, f, err := Parse([]byte(om), "application/openmetrics-text; version=1.0.0; charset=utf-8", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if f != FormatOpenMetrics {
		t.Errorf("format %q", f)
	}
	checkProm(t, res, "")
}

func TestParsePrefixAndBounds(t *testing.T) {
	res, _, err := Parse([]byte(promText), "", "svc.", 0)
	if err != nil {
		t.Fatal(err)
	}
	checkProm(t, res, "svc.")

	res, _, _ = Parse([]byte(promText), "", "", 5)
	if n := len(res.Stats) + len(res.Counters); n != 5 || res.Dropped != 13 {
		t.Errorf("bound 5: %d entries, %d dropped", n, res.Dropped)
	}
	long := strings.Repeat("x", 300)
	res, _, _ = Parse([]byte(long+" 1\nok 2\n"), "", "", 0)
	if len(res.Stats) != 1 || res.Dropped != 1 {
		t.Errorf("a 300-byte name: %v, %d dropped", res.Stats, res.Dropped)
	}
	res, _, _ = Parse([]byte(`{"counters": {"bad\u0001name": 1, "ok": 2}, "stats": {}}`), "", "", 0)
	if len(res.Counters) != 1 || res.Dropped != 1 {
		t.Errorf("a control character: %v, %d dropped", res.Counters, res.Dropped)
	}
}

func TestPercentileSuffix(t *testing.T) {
	for q, want := range map[float64]string{
		0.5: "50_0_percentile", 0.01: "01_0_percentile", 0.1: "10_0_percentile", 0.9: "90_0_percentile",
		0.95: "95_0_percentile", 0.99: "99_0_percentile", 0.999: "99_9_percentile", 0: "00_0_percentile",
		0.9999: "99_99_percentile", 1: "100_percentile", 0.25: "25_0_percentile",
	} {
		if got, ok := PercentileSuffix(q); !ok || got != want {
			t.Errorf("%v: %q, want %q", q, got, want)
		}
	}
	if _, ok := PercentileSuffix(1.5); ok {
		t.Error("1.5 is a quantile")
	}
}

func TestTargetMirrorsCounters(t *testing.T) {
	var body atomic.Value
	body.Store(`{"counters": {"storage_server.allocate": 10, "node.producer_errors": 0}, "stats": {"node.uptime": 5, "cpu_monitor.total": 1.5}}`)
	srv := tahoeServer(t, func() []byte { return []byte(body.Load().(string)) })
	p := node.NewProvider(node.ProviderOptions{})
	stop := node.RegisterBuiltins(p)
	defer stop()
	tg, err := New(srv.URL+"/statistics?t=json", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := tg.Register(p); err != nil {
		t.Fatal(err)
	}
	snap := p.Snapshot(context.Background())
	get := func(s stats.Set, name string) string { v, _ := s.Get(name); return v.String() }
	if got := get(snap.Counters, "storage_server.allocate"); got != "10" {
		t.Errorf("allocate %s, want 10", got)
	}
	// The service's stats win over the sidecar's built-in ones.
	if got := get(snap.Stats, "node.uptime"); got != "5" {
		t.Errorf("node.uptime %s, want the service's 5", got)
	}
	if _, ok := snap.Stats.Get("go.goroutines"); !ok {
		t.Error("the sidecar's own stats are gone")
	}
	body.Store(`{"counters": {"storage_server.allocate": 25}, "stats": {}}`)
	snap = p.Snapshot(context.Background())
	if got := get(snap.Counters, "storage_server.allocate"); got != "25" {
		t.Errorf("allocate %s, want 25", got)
	}
	// The service restarts: its total starts again; the node's goes on.
	body.Store(`{"counters": {"storage_server.allocate": 3}, "stats": {}}`)
	snap = p.Snapshot(context.Background())
	if got := get(snap.Counters, "storage_server.allocate"); got != "28" {
		t.Errorf("allocate after a restart %s, want 28", got)
	}
	if got := get(snap.Counters, ErrorsCounter); got != "0" {
		t.Errorf("%s = %s", ErrorsCounter, got)
	}
	if tg.Register(p) == nil {
		t.Error("registered twice")
	}
}

// TestCounterNamesBounded: a service whose counter labels churn adds new
// names every scrape; the node keeps at most MaxEntries of them.
func TestCounterNamesBounded(t *testing.T) {
	var n atomic.Int64
	srv := tahoeServer(t, func() []byte {
		i := n.Add(1)
		return []byte(fmt.Sprintf(`{"counters": {"req.pid%d": 1, "req.pid%d": 1}, "stats": {}}`, 2*i, 2*i+1))
	})
	p := node.NewProvider(node.ProviderOptions{})
	tg, _ := New(srv.URL+"/statistics?t=json", Options{MaxEntries: 5})
	tg.Register(p)
	var snap stats.Snapshot
	for range 10 {
		snap = p.Snapshot(context.Background())
	}
	names := 0
	for name := range snap.Counters.All() {
		if strings.HasPrefix(name, "req.") {
			names++
		}
	}
	if v, _ := snap.Counters.Get(DroppedCounter); names != 5 || v.Int() != 15 {
		t.Errorf("%d req.* counters kept, %v dropped; want 5 and 15", names, v)
	}
}

func TestNewRefusesBadURLs(t *testing.T) {
	for _, u := range []string{"", "file:///etc/passwd", "localhost:3456", "http://", "://x"} {
		if _, err := New(u, Options{}); err == nil {
			t.Errorf("%q accepted", u)
		}
	}
}

// logBuffer collects log lines.
type logBuffer struct {
	mu  chan struct{}
	buf bytes.Buffer
}

func newLog() (*slog.Logger, *logBuffer) {
	lb := &logBuffer{mu: make(chan struct{}, 1)}
	return slog.New(slog.NewTextHandler(lb, nil)), lb
}

func (l *logBuffer) Write(b []byte) (int, error) {
	l.mu <- struct{}{}
	defer func() { <-l.mu }()
	return l.buf.Write(b)
}

func (l *logBuffer) String() string {
	l.mu <- struct{}{}
	defer func() { <-l.mu }()
	return l.buf.String()
}

// TestBadTargets: a target that hangs, one that answers 500, one that sends
// 100 MB and one that sends garbage. Every snapshot still answers within the
// scrape timeout (plus slack for a loaded machine), each failure is counted
// and logged once, and a 100 MB body costs no more than the size bound.
func TestBadTargets(t *testing.T) {
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/slowbody", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("# TYPE a gauge\n"))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/500", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom\x1b[31m", http.StatusInternalServerError)
	})
	chunk := bytes.Repeat([]byte("big_metric_name_padding 1\n"), 4096)
	mux.HandleFunc("/huge", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		for sent := 0; sent < 100<<20; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/garbage", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("\x00\xff\xfe not { metrics } at all\n\x1b[2J"))
	})
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("fine_gauge 1\n"))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer close(release)

	log, logs := newLog()
	const timeout = 500 * time.Millisecond
	p := node.NewProvider(node.ProviderOptions{Logger: log, ProducerTimeout: timeout + 2*time.Second})
	paths := []string{"/hang", "/slowbody", "/500", "/huge", "/garbage", "/ok"}
	for _, path := range paths {
		tg, err := New(srv.URL+path, Options{Timeout: timeout, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		if err := tg.Register(p); err != nil {
			t.Fatal(err)
		}
	}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const polls = 3
	var snap stats.Snapshot
	for range polls {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		began := time.Now()
		snap = p.Snapshot(ctx)
		took := time.Since(began)
		cancel()
		// The bound: the scrape timeout, and generous slack for a busy machine.
		if took > timeout+2*time.Second {
			t.Errorf("snapshot took %v with a %v scrape timeout", took, timeout)
		}
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	// Three reads of a 100 MB body each stop at the 8 MiB bound (plus
	// ReadAll's doubling), not at 300 MB.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 3*48<<20 {
		t.Errorf("%d MB allocated over %d polls of a 100 MB target", alloc>>20, polls)
	}
	if v, _ := snap.Counters.Get(ErrorsCounter); v.Int() != int64(polls*(len(paths)-1)) {
		t.Errorf("%s = %v, want %d", ErrorsCounter, v, polls*(len(paths)-1))
	}
	if v, _ := snap.Counters.Get(node.ProducerErrorsCounter); v.Int() != 0 {
		t.Errorf("%s = %v: a scrape outlived its producer", node.ProducerErrorsCounter, v)
	}
	if v, ok := snap.Stats.Get("fine_gauge"); !ok || v.String() != "1.0" {
		t.Errorf("the good target's stat: %v %v", v, ok)
	}
	out := logs.String()
	for _, want := range []string{"/hang err=\"no answer within 500ms\"", "/slowbody err=\"body not read within 500ms\"", "/500 err=\"HTTP status 500\"", "/huge err=\"body over the limit of 8388608 bytes\"", "/garbage err="} {
		if n := strings.Count(out, want); n != 1 {
			t.Errorf("%q logged %d times, want once:\n%s", want, n, out)
		}
	}
	if strings.ContainsAny(out, "\x00\x1b") {
		t.Errorf("control characters reached the log:\n%q", out)
	}
	if n := strings.Count(out, "scrape answered"); n != 1 {
		t.Errorf("recovery/first answer logged %d times:\n%s", n, out)
	}
}

func BenchmarkParseNodeExporterSized(b *testing.B) {
	body := nodeExporterLike(1000)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Parse(body, "text/plain; version=0.0.4", "", 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSnapshotWithScrape is the node's cost per poll with a
// node_exporter-sized target (about 1,000 series) over loopback HTTP.
func BenchmarkSnapshotWithScrape(b *testing.B) {
	body := nodeExporterLike(1000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.Write(body)
	}))
	defer srv.Close()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	p := node.NewProvider(node.ProviderOptions{Logger: quiet})
	tg, _ := New(srv.URL, Options{Logger: quiet})
	tg.Register(p)
	if snap := p.Snapshot(context.Background()); snap.Counters.Len()+snap.Stats.Len() < 1000 {
		b.Fatalf("%d entries", snap.Counters.Len()+snap.Stats.Len())
	}
	b.ReportAllocs()
	before := cpuTime()
	for b.Loop() {
		p.Snapshot(context.Background())
	}
	// The process's CPU: the node's, and the test server's few
	// microseconds of writing a fixed body.
	b.ReportMetric(float64((cpuTime()-before).Microseconds())/float64(b.N), "cpu-us/poll")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// nodeExporterLike is a body shaped as node_exporter's: gauges and counters
// with a few labels each, n series in all.
func nodeExporterLike(n int) []byte {
	var sb strings.Builder
	for i := 0; i < n; i++ {
		fam := i / 10
		if i%10 == 0 {
			typ := "gauge"
			if fam%2 == 1 {
				typ = "counter"
			}
			fmt.Fprintf(&sb, "# HELP node_family_%d_total Something the kernel counts.\n# TYPE node_family_%d_total %s\n", fam, fam, typ)
		}
		fmt.Fprintf(&sb, "node_family_%d_total{cpu=\"%d\",mode=\"m%d\"} %d.25\n", fam, i%10, i%3, i*1000)
	}
	return []byte(sb.String())
}

// BenchmarkParseOpenMetricsSized is the same body as OpenMetrics, which
// expfmt reads with a grammar-driven parser: the reason Accept asks for
// the text format first.
func BenchmarkParseOpenMetricsSized(b *testing.B) {
	body := append(nodeExporterLike(1000), "# EOF\n"...)
	// OpenMetrics names a counter family without its _total.
	body = regexp.MustCompile(`(?m)^(# (?:HELP|TYPE) node_family_\d*[13579])_total`).ReplaceAll(body, []byte("$1"))
	if _, _, err := Parse(body, expfmtOpenMetrics, "", 0); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		Parse(body, expfmtOpenMetrics, "", 0)
	}
}

const expfmtOpenMetrics = "application/openmetrics-text; version=1.0.0; charset=utf-8"
