package web

import (
	"bytes"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"capstats/gatherer"
	"capstats/openmetrics"
	"capstats/openmetrics/omtest"
	"capstats/stats"
	"capstats/statsfile"
)

// fakeSource serves a fixed file.
type fakeSource struct {
	file    *statsfile.File
	metrics gatherer.Metrics
	errors  map[string]int64
}

func (f *fakeSource) File() *statsfile.File         { return f.file }
func (f *fakeSource) Metrics() gatherer.Metrics     { return f.metrics }
func (f *fakeSource) PollErrors(tubID string) int64 { return f.errors[tubID] }
func (f *fakeSource) Connected() int {
	c := 0
	for _, n := range f.file.Nodes {
		if n.Up {
			c++
		}
	}
	return c
}

var now = time.Unix(1_800_000_000, 0)

func epoch(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func fixtureSource() *fakeSource {
	return &fakeSource{
		file: &statsfile.File{Nodes: []statsfile.Node{
			{TubID: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", Nickname: "fresh", Up: true, Stats: storageSnap(0.5),
				Timestamp: epoch(now.Add(-12 * time.Second)), LastPoll: epoch(now.Add(-12 * time.Second)), PollSeconds: 0.0011},
			{TubID: "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", Nickname: "stale", Up: true, Stats: storageSnap(0.6),
				Timestamp: epoch(now.Add(-10 * time.Minute)), LastPoll: epoch(now.Add(-5 * time.Second)), PollSeconds: 30, LastError: "getStats timed out after 30s"},
			{TubID: "cccccccccccccccccccccccccccccccc", Nickname: "gone", Up: false, Stats: storageSnap(0.7),
				Timestamp: epoch(now.Add(-20 * time.Second)), LastPoll: epoch(now.Add(-20 * time.Second)), PollSeconds: 0.002, LastError: "connection lost: EOF"},
			{TubID: "dddddddddddddddddddddddddddddddd", Nickname: "<script>alert(1)</script>", Up: true},
		}},
		errors: map[string]int64{"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb": 4},
	}
}

func newTestHandler(src Source, hist *History) *Handler {
	return New(src, Options{History: hist, Interval: time.Minute, Now: func() time.Time { return now }})
}

func do(h http.Handler, method, target string, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

func TestStatsJSONIsTheFile(t *testing.T) {
	src := fixtureSource()
	w := do(newTestHandler(src, nil), "GET", "/stats.json")
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("%d %s", w.Code, w.Header().Get("Content-Type"))
	}
	if want := src.file.AppendJSON(nil); !bytes.Equal(w.Body.Bytes(), want) {
		t.Errorf("/stats.json differs from the file:\n%s\nwant:\n%s", w.Body, want)
	}
	back, err := statsfile.Decode(w.Body)
	if err != nil || len(back.Nodes) != 4 {
		t.Errorf("does not read back: %v", err)
	}
}

func TestRoutes(t *testing.T) {
	h := newTestHandler(fixtureSource(), nil)
	for _, c := range []struct {
		method, path string
		code         int
	}{
		{"GET", "/", 200},
		{"GET", "/metrics", 200},
		{"GET", "/stats.json", 200},
		{"HEAD", "/metrics", 200},
		{"HEAD", "/", 200},
		{"GET", "/nope", 404},
		{"GET", "/metrics/x", 404},
		{"POST", "/metrics", 405},
		{"DELETE", "/", 405},
	} {
		w := do(h, c.method, c.path)
		if w.Code != c.code {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, w.Code, c.code)
		}
		if c.method == "HEAD" && w.Body.Len() > 0 {
			t.Errorf("HEAD %s has a body", c.path)
		}
	}
}

func TestMetricsFromFile(t *testing.T) {
	src := fixtureSource()
	src.metrics.Rounds = 7
	src.metrics.Writes = 6
	src.metrics.WriteFailures = 1
	h := newTestHandler(src, nil)
	w := do(h, "GET", "/metrics")
	text := w.Body.String()
	if problems := omtest.Promtool(t, w.Body.Bytes()); len(problems) > 0 {
		t.Errorf("promtool:\n%s\n%s", strings.Join(problems, "\n"), text)
	}
	for _, want := range []string{
		"capstats_gatherer_nodes_connected 3\n",
		"capstats_gatherer_nodes 4\n",
		"capstats_gatherer_rounds_total 7\n",
		"capstats_gatherer_write_failures_total 1\n",
		`capstats_up{tubid="cccccccccccccccccccccccccccccccc",nickname="gone"} 0` + "\n",
		`capstats_poll_errors_total{tubid="bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",nickname="stale"} 4` + "\n",
		`capstats_poll_duration_seconds{tubid="bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",nickname="stale"} 30` + "\n",
		`capstats_last_sample_timestamp_seconds{tubid="aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",nickname="fresh"} 1.799999988e+09` + "\n",
		`load_monitor_avg_load{tubid="aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",nickname="fresh"} 0.5` + "\n",
		`capstats_up{tubid="dddddddddddddddddddddddddddddddd",nickname="<script>alert(1)</script>"} 1` + "\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// The stale node and the node that is down keep their health series
	// but not their stats; a node never polled has no timestamps.
	for _, unwanted := range []string{
		`load_monitor_avg_load{tubid="bbbb`,
		`load_monitor_avg_load{tubid="cccc`,
		`capstats_last_poll_timestamp_seconds{tubid="dddd`,
		`capstats_poll_duration_seconds{tubid="dddd`,
		"capstats_gatherer_stats_file_bytes", // the gatherer does not record it yet
	} {
		if strings.Contains(text, unwanted) {
			t.Errorf("/metrics has %q", unwanted)
		}
	}
	om := do(h, "GET", "/metrics?format=openmetrics").Body.String()
	if err := omtest.Validate(strings.NewReader(om)); err != nil {
		t.Errorf("%v\n%s", err, om)
	}
}

func TestMetricsNegotiationAndGzip(t *testing.T) {
	h := newTestHandler(fixtureSource(), nil)
	w := do(h, "GET", "/metrics", "Accept", "application/openmetrics-text; version=1.0.0", "Accept-Encoding", "gzip, deflate")
	if ct := w.Header().Get("Content-Type"); ct != openmetrics.ContentType {
		t.Errorf("Content-Type %q", ct)
	}
	if w.Header().Get("Content-Encoding") != "gzip" {
		t.Error("not gzipped")
	}
	w = do(h, "GET", "/metrics", "Accept", "text/plain", "Accept-Encoding", "gzip;q=0")
	if ct := w.Header().Get("Content-Type"); ct != openmetrics.TextContentType {
		t.Errorf("Content-Type %q", ct)
	}
	if w.Header().Get("Content-Encoding") != "" {
		t.Error("gzipped though gzip;q=0")
	}
	if !strings.Contains(w.Body.String(), "# TYPE capstats_poll_errors_total counter") {
		t.Error("text format counter metadata")
	}
}

func TestStatusPage(t *testing.T) {
	src := fixtureSource()
	hist := NewHistory(HistoryOptions{Interval: time.Minute, Now: func() time.Time { return now }})
	for i := range 30 {
		at := now.Add(time.Duration(i-30) * time.Minute)
		hist.Record("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", at, storageSnap(float64(i%5)/10))
		if i < 10 || i > 20 { // a gap: the node was away
			hist.Record("cccccccccccccccccccccccccccccccc", at, storageSnap(0.3))
		}
	}
	h := newTestHandler(src, hist)
	w := do(h, "GET", "/")
	page := w.Body.String()
	if ct := w.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP %q", csp)
	}
	for _, want := range []string{
		`data-tubid="aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" data-state="up"`,
		`data-tubid="cccccccccccccccccccccccccccccccc" data-state="down"`,
		`<span class="pill up">3 up</span>`,
		`<span class="pill down">1 down</span>`,
		`<a href="#node-cccccccccccccccccccccccccccccccc">gone</a>`,
		`>12s ago<`,
		`>10m00s ago<`,
		`>never<`,
		`>1.1 ms<`,
		`>30.00 s<`,
		"getStats timed out after 30s",
		"connection lost: EOF",
		"&lt;script&gt;alert(1)&lt;/script&gt;",
		"<option selected>load_monitor.avg_load</option>",
		"<polyline",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, unwanted := range []string{"<script>", "http://", "https://", "src="} {
		if strings.Contains(page, unwanted) {
			t.Errorf("page has %q: scripts or external assets", unwanted)
		}
	}
	// The node that was away has two lines: the gap is not bridged.
	row := page[strings.Index(page, `data-tubid="cccc`):]
	row = row[:strings.Index(row, "</tr>")]
	if n := strings.Count(row, "<polyline"); n != 2 {
		t.Errorf("%d lines for a node with a gap, want 2:\n%s", n, row)
	}

	// Another stat, and a name no node reports (escaped, not tracked).
	page = do(h, "GET", "/?stat=node.uptime").Body.String()
	if !strings.Contains(page, "<option selected>node.uptime</option>") || !strings.Contains(page, "Charted since") {
		t.Errorf("?stat=node.uptime not selected or not tracked:\n%s", page)
	}
	page = do(h, "GET", `/?stat=%3Cimg%20src%3Dx%3E`).Body.String()
	if strings.Contains(page, "<img") || !strings.Contains(page, "No node reports") {
		t.Error("unknown stat not reported, or not escaped")
	}
	for _, s := range hist.Tracked() {
		if strings.Contains(s, "img") {
			t.Error("a stat no node reports was tracked")
		}
	}
	// Only the nodes that are down.
	page = do(h, "GET", "/?only=down").Body.String()
	if strings.Contains(page, `data-state="up"`) || !strings.Contains(page, `data-state="down"`) {
		t.Error("?only=down lists nodes that are up")
	}
}

// A big grid is listed a page at a time; the list of nodes that are down
// links to the page that has each one, and the links keep the chosen stat.
func TestStatusPagePages(t *testing.T) {
	h := New(fixtureSource(), Options{Interval: time.Minute, PageSize: 2, Now: func() time.Time { return now }})
	rows := func(page string) []string {
		var ids []string
		for _, part := range strings.Split(page, `data-tubid="`)[1:] {
			ids = append(ids, part[:4])
		}
		return ids
	}
	cases := []struct {
		target   string
		rows     []string
		contains []string
		lacks    []string
	}{
		{"/", []string{"aaaa", "bbbb"}, []string{
			"Nodes 1–2 of 4", "page 1 of 2", `<a href="/?page=2" rel="next">`,
			`<a href="/?page=2#node-cccccccccccccccccccccccccccccccc">gone</a>`,
			`<span class="pill up">3 up</span>`, `<span class="pill down">1 down</span>`,
		}, []string{`rel="prev"`}},
		{"/?page=2", []string{"cccc", "dddd"}, []string{
			"Nodes 3–4 of 4", "page 2 of 2", `<a href="/" rel="prev">`,
			`<a href="#node-cccccccccccccccccccccccccccccccc">gone</a>`,
		}, []string{`rel="next"`}},
		{"/?page=99", []string{"cccc", "dddd"}, []string{"page 2 of 2"}, nil},
		{"/?page=x", []string{"aaaa", "bbbb"}, []string{"page 1 of 2"}, nil},
		{"/?stat=node.uptime", []string{"aaaa", "bbbb"}, []string{
			`<a href="/?page=2&amp;stat=node.uptime" rel="next">`,
			`<a href="/?page=2&amp;stat=node.uptime#node-cccccccccccccccccccccccccccccccc">gone</a>`,
		}, nil},
		{"/?only=down", []string{"cccc"}, []string{`<a href="#node-cccccccccccccccccccccccccccccccc">gone</a>`}, []string{"Nodes ", "page 1 of"}},
	}
	for _, c := range cases {
		page := do(h, "GET", c.target).Body.String()
		if got := rows(page); strings.Join(got, ",") != strings.Join(c.rows, ",") {
			t.Errorf("%s lists %v, want %v", c.target, got, c.rows)
		}
		for _, want := range c.contains {
			if !strings.Contains(page, want) {
				t.Errorf("%s lacks %q", c.target, want)
			}
		}
		for _, unwanted := range c.lacks {
			if strings.Contains(page, unwanted) {
				t.Errorf("%s has %q", c.target, unwanted)
			}
		}
	}
	// The default page size lists the whole fixture on one page.
	if page := do(newTestHandler(fixtureSource(), nil), "GET", "/").Body.String(); strings.Contains(page, `class="pager"`) || len(rows(page)) != 4 {
		t.Errorf("4 nodes at the default page size: %d rows, pager shown: %v", len(rows(page)), strings.Contains(page, `class="pager"`))
	}
}

func TestStatusPageEmptyAndWithoutHistory(t *testing.T) {
	page := do(newTestHandler(&fakeSource{file: &statsfile.File{}}, nil), "GET", "/").Body.String()
	if !strings.Contains(page, "No node has connected yet.") || !strings.Contains(page, `<span class="pill none">0 down</span>`) {
		t.Errorf("empty page:\n%s", page)
	}
	page = do(newTestHandler(fixtureSource(), nil), "GET", "/").Body.String()
	if !strings.Contains(page, "charts are off") || !strings.Contains(page, "no data") {
		t.Error("page without history")
	}
}

func TestDrawChart(t *testing.T) {
	if drawChart(nil, now, time.Hour, time.Minute, "x") != nil {
		t.Error("chart of nothing")
	}
	pts := []Point{
		{now.Add(-50 * time.Minute), 1},
		{now.Add(-49 * time.Minute), 3},
		{now.Add(-48 * time.Minute), nan()},
		{now.Add(-47 * time.Minute), 2},
		{now.Add(-10 * time.Minute), 2}, // after a gap of 37 spacings
	}
	c := drawChart(pts, now, time.Hour, time.Minute, "x")
	if len(c.Lines) != 3 || c.Min != "1" || c.Max != "3" {
		t.Fatalf("chart %+v", c)
	}
	if c.Lines[0] != "42.0,33.0 45.9,3.0" {
		t.Errorf("first line %q", c.Lines[0])
	}
	if c.Dot == nil || c.Dot.X != "198.0" {
		t.Errorf("last point %+v", c.Dot)
	}
	flat := drawChart(pts[:1], now, time.Hour, time.Minute, "x")
	if len(flat.Lines) != 1 || !strings.Contains(flat.Lines[0], ",18.0") {
		t.Errorf("one point: %+v", flat)
	}
}

func nan() float64 { return math.NaN() }

// BenchmarkMetrics10k is a /metrics request for 10,000 nodes of 40 entries
// (fixture nodes of 17 entries are padded with 23 gauges), in OpenMetrics,
// without and with gzip.
// source10k is a grid of 10,000 nodes reporting 40 stats each.
func source10k() *fakeSource {
	src := &fakeSource{file: &statsfile.File{}}
	for i := range 10000 {
		snap := storageSnap(float64(i%100) / 100)
		sts := snap.Stats.Map()
		for g := range 23 {
			sts[fmt.Sprintf("extra.gauge_%d", g)] = stats.Int(int64(i + g))
		}
		snap.Stats = stats.SetOf(sts)
		src.file.Nodes = append(src.file.Nodes, statsfile.Node{
			TubID: fmt.Sprintf("%032d", i), Nickname: fmt.Sprintf("storage-%d", i), Up: true, Stats: snap,
			Timestamp: epoch(now), LastPoll: epoch(now), PollSeconds: 0.001,
		})
	}
	return src
}

func BenchmarkMetrics10k(b *testing.B) {
	h := newTestHandler(source10k(), nil)
	for _, enc := range []string{"identity", "gzip"} {
		b.Run(enc, func(b *testing.B) {
			b.ReportAllocs()
			var n int
			for b.Loop() {
				req := httptest.NewRequest("GET", "/metrics", nil)
				req.Header.Set("Accept", "application/openmetrics-text")
				req.Header.Set("Accept-Encoding", enc)
				w := &countingResponse{header: http.Header{}}
				h.ServeHTTP(w, req)
				n = w.n
			}
			b.ReportMetric(float64(n), "bytes/response")
		})
	}
}

// BenchmarkStatusPage10k draws the status page of 10,000 nodes with an
// hour of history each: one page of the default size, and every node on
// one page as the baseline.
func BenchmarkStatusPage10k(b *testing.B) {
	src := source10k()
	hist := NewHistory(HistoryOptions{Interval: time.Minute, Now: func() time.Time { return now }})
	for m := range 60 {
		at := now.Add(time.Duration(m-60) * time.Minute)
		for _, n := range src.file.Nodes {
			hist.Record(n.TubID, at, n.Stats)
		}
	}
	for _, c := range []struct {
		name string
		size int
	}{{"page", 0}, {"all", 10000}} {
		h := New(src, Options{History: hist, Interval: time.Minute, PageSize: c.size, Now: func() time.Time { return now }})
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			var n int
			for b.Loop() {
				w := &countingResponse{header: http.Header{}}
				h.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
				n = w.n
			}
			b.ReportMetric(float64(n), "bytes/response")
		})
	}
}

type countingResponse struct {
	header http.Header
	n      int
}

func (c *countingResponse) Header() http.Header         { return c.header }
func (c *countingResponse) Write(p []byte) (int, error) { c.n += len(p); return len(p), nil }
func (c *countingResponse) WriteHeader(int)             {}
