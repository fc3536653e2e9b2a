package web

import (
	"compress/gzip"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"capstats/capnp/statsrpc"
	"capstats/capnp/tub"
	"capstats/gatherer"
	"capstats/internal/fakenode"
	"capstats/stats"
)

// fakeNode is a provider over a real TLS connection to a real gatherer,
// answering with whatever snapshot the test sets, or failing while a
// failure is set.
type fakeNode struct {
	*fakenode.Provider
	id   *tub.Identity
	conn *tub.Conn

	mu   sync.Mutex
	snap stats.Snapshot
	fail string
}

func (f *fakeNode) set(s stats.Snapshot) {
	f.mu.Lock()
	f.snap = s
	f.mu.Unlock()
}

func (f *fakeNode) setFail(msg string) {
	f.mu.Lock()
	f.fail = msg
	f.mu.Unlock()
}

func (f *fakeNode) answer(call statsrpc.Provider_getStats) error {
	f.mu.Lock()
	snap, fail := f.snap, f.fail
	f.mu.Unlock()
	if fail != "" {
		return fakenode.Fail(fail)(call)
	}
	return fakenode.AnswerWith(snap)(call)
}

// connect dials the gatherer as a node would and calls provide.
func connect(t *testing.T, furl tub.Furl, nickname string, snap stats.Snapshot) *fakeNode {
	t.Helper()
	f := &fakeNode{snap: snap}
	p, conn := fakenode.Connect(t, furl, nickname, f.answer)
	f.Provider, f.id, f.conn = p, p.ID, conn
	return f
}

// live is a running gatherer with its HTTP handler on a test server.
type live struct {
	d    *gatherer.Daemon
	hist *History
	srv  *httptest.Server
}

// startLive creates and starts a gatherer in a temp basedir, with a
// History fed by OnPoll and the handler served over HTTP, until the test
// ends.
func startLive(t *testing.T, interval time.Duration, ho HistoryOptions) *live {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "g")
	if err := gatherer.Create(dir, gatherer.CreateOptions{Hostname: "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	ho.Interval = interval
	hist := NewHistory(ho)
	d, err := gatherer.Start(dir, gatherer.Config{
		Interval: interval,
		Logger:   slog.New(slog.DiscardHandler),
		OnPoll:   hist.Record,
	}, tub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	srv := httptest.NewServer(New(d.Gatherer(), Options{History: hist, Interval: interval}))
	t.Cleanup(func() { srv.Close(); cancel(); <-done; d.Close() })
	return &live{d: d, hist: hist, srv: srv}
}

// get fetches a path with the given Accept header and returns the body
// (un-gzipped) and the response.
func get(t *testing.T, url, accept string) (string, *http.Response) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	req.Header.Set("Accept-Encoding", "gzip") // so that we see the raw encoding
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		r = gz
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), resp
}

// waitFor polls cond until it holds or the bound runs out.
// sampleLine finds the sample line of a metric for a tub ID.
func sampleLine(exposition, metric, tubID string) string {
	prefix := metric + `{tubid="` + tubID + `"`
	for l := range strings.SplitSeq(exposition, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// storageSnap looks like a storage node's snapshot: counters, gauges,
// nulls, percentiles.
func storageSnap(load float64) stats.Snapshot {
	return stats.Snapshot{
		Counters: stats.SetOf(stats.Map{
			"storage_server.allocate":    stats.Int(12),
			"storage_server.bytes_added": stats.Int(1 << 33),
			"node.producer_errors":       stats.Int(0),
		}),
		Stats: stats.SetOf(stats.Map{
			"load_monitor.avg_load":                        stats.Float(load),
			"load_monitor.max_load":                        stats.Float(load * 3),
			"cpu_monitor.1min_avg":                         stats.Float(0.02),
			"cpu_monitor.15min_avg":                        stats.Null(),
			"cpu_monitor.total":                            stats.Float(3.25),
			"node.uptime":                                  stats.Float(42.5),
			"storage_server.disk_total":                    stats.Int(941088460800),
			"storage_server.disk_avail":                    stats.Int(131486851072),
			"storage_server.accepting_immutable_shares":    stats.Int(1),
			"storage_server.latencies.get.mean":            stats.Float(0.0021),
			"storage_server.latencies.get.samplesize":      stats.Int(1000),
			"storage_server.latencies.get.50_0_percentile": stats.Float(0.001),
			"storage_server.latencies.get.99_0_percentile": stats.Float(0.01),
			"storage_server.latencies.get.99_9_percentile": stats.Null(),
		}),
	}
}
