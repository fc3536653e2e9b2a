package main

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"capstats/internal/testbin"
	"capstats/internal/testutil"
)

// TestSidecarFlags runs the binary with every sidecar flag and reads what it
// reports over --http: the scraped service's names, with its node.uptime
// replacing the node's own, StatsD lines sent over UDP, and the host's.
func TestSidecarFlags(t *testing.T) {
	fixture, err := os.ReadFile(filepath.Join(testbin.Root(t), "scrape", "testdata", "tahoe-statistics.json"))
	if err != nil {
		t.Fatal(err)
	}
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(fixture)
	}))
	defer svc.Close()
	prom := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("# TYPE app_requests_total counter\napp_requests_total{code=\"200\"} 41\n"))
	}))
	defer prom.Close()
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	statsdAddr := udp.LocalAddr().String()
	udp.Close()

	p := start(t, testbin.Build(t, "capstats-node"), "--basedir", t.TempDir(), "--http", "127.0.0.1:0",
		"--scrape", svc.URL+"/statistics?t=json", "--scrape", prom.URL+"/metrics", "--statsd", statsdAddr)
	base := p.waitLog(t, `url="?(http://127\.0\.0\.1:\d+)/`)
	p.waitLog(t, `statsd listening`)
	conn, err := net.Dial("udp", statsdAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	type snapshot struct {
		Counters map[string]json.Number `json:"counters"`
		Stats    map[string]json.Number `json:"stats"`
	}
	var snap snapshot
	testutil.WaitFor(t, "the StatsD counter over --http", 20*time.Second, func() bool {
		conn.Write([]byte("sent.lines:1|c\nbad line\n"))
		body, _ := get(t, base+"/statistics?t=json")
		d := json.NewDecoder(strings.NewReader(body))
		d.UseNumber()
		snap = snapshot{}
		return d.Decode(&snap) == nil && snap.Counters["sent.lines"] != ""
	})
	for name, want := range map[string]string{"storage_server.allocate": "1841", "uploader.files_uploaded": "17", "app_requests_total.code_200": "41"} {
		if got := snap.Counters[name]; string(got) != want {
			t.Errorf("counter %s = %q, want %s", name, got, want)
		}
	}
	if snap.Counters["node.statsd_bad_lines"] == "" || snap.Counters["node.statsd_bad_lines"] == "0" {
		t.Errorf("bad StatsD lines not counted: %v", snap.Counters)
	}
	for name, want := range map[string]string{"node.uptime": "86402.5", "load_monitor.avg_load": "0.0123", "cpu_monitor.total": "812.44"} {
		if got := snap.Stats[name]; string(got) != want {
			t.Errorf("%s = %q: the service's %s must win", name, got, want)
		}
	}
	for _, name := range []string{"host.load_1", "host.memory_total_bytes", "host.uptime_seconds"} {
		if _, ok := snap.Stats[name]; !ok {
			t.Errorf("no %s", name)
		}
	}
	if v, ok := snap.Stats["storage_server.latencies.writev.mean"]; !ok || v != "" {
		t.Errorf("the service's null stat: %q (present %v)", v, ok)
	}
	p.stopWith(t, syscall.SIGTERM)

	// --no-host leaves the host out.
	p = start(t, testbin.Build(t, "capstats-node"), "--basedir", t.TempDir(), "--http", "127.0.0.1:0", "--no-host")
	base = p.waitLog(t, `url="?(http://127\.0\.0\.1:\d+)/`)
	if body, _ := get(t, base+"/statistics?t=json"); strings.Contains(body, "host.") || !strings.Contains(body, "node.uptime") {
		t.Errorf("--no-host:\n%s", body)
	}
	p.stopWith(t, syscall.SIGTERM)
}

func TestSidecarBadFlags(t *testing.T) {
	stderr, code := runOnce(t, "--basedir", t.TempDir(), "--scrape", "localhost:3456/statistics")
	checkOneLineError(t, stderr, code, "--scrape")
	stderr, code = runOnce(t, "--basedir", t.TempDir(), "--statsd", "no-such-host.invalid:x")
	checkOneLineError(t, stderr, code, "--statsd")
	stderr, code = runOnce(t, "--basedir", t.TempDir(), "--scrape-timeout", "0s")
	checkOneLineError(t, stderr, code, "--scrape-timeout")
}
