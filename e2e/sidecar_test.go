package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"capstats/internal/testbin"
	"capstats/internal/testutil"
	"capstats/openmetrics/omtest"
	"capstats/stats"
	"capstats/statsfile"
)

// startGatherer creates and runs a gatherer polling every second, with
// --http when withHTTP; it returns its basedir, its furl and its HTTP base
// URL ("" without).
func startGatherer(t *testing.T, work string, withHTTP bool) (gdir string, furl []byte, httpURL string) {
	t.Helper()
	bin := testbin.Build(t, "gatherer")
	gdir = filepath.Join(work, "gatherer")
	mustRun(t, nil, bin, "create", "--basedir", gdir, "--hostname", "127.0.0.1")
	args := []string{"run", "--basedir", gdir, "--interval", "1s"}
	if withHTTP {
		args = append(args, "--http", "127.0.0.1:0")
	}
	g := start(t, bin, args...)
	furlPath := filepath.Join(gdir, "stats_gatherer.furl")
	testutil.WaitFor(t, "furl file", 20*time.Second, func() bool { _, err := os.Stat(furlPath); return err == nil })
	furl, _ = os.ReadFile(furlPath)
	if withHTTP {
		re := regexp.MustCompile(`url=(http://127\.0\.0\.1:\d+)/`)
		testutil.WaitFor(t, "the gatherer's HTTP address", 20*time.Second, func() bool {
			m := re.FindStringSubmatch(g.out.String())
			if m != nil {
				httpURL = m[1]
			}
			return m != nil
		})
	}
	return gdir, furl, httpURL
}

// startSidecar runs capstats-node attached to the gatherer with args.
func startSidecar(t *testing.T, work, nick string, furl []byte, args ...string) (*proc, string) {
	t.Helper()
	dir := filepath.Join(work, nick)
	os.MkdirAll(dir, 0o700)
	os.WriteFile(filepath.Join(dir, "stats_gatherer.furl"), furl, 0o600)
	n := start(t, testbin.Build(t, "capstats-node"), append([]string{"--basedir", dir, "--nickname", nick}, args...)...)
	return n, nodeTubID(t, n)
}

// entry waits until stats.json holds the node with a sample for which ok
// is true, and returns it.
func entry(t *testing.T, statsPath, tubID, what string, ok func(stats.Snapshot) bool) stats.Snapshot {
	t.Helper()
	var snap stats.Snapshot
	testutil.WaitFor(t, what, 60*time.Second, func() bool {
		f, err := statsfile.Load(statsPath)
		if err != nil {
			return false
		}
		for _, n := range f.Nodes {
			if n.TubID == tubID && n.Up && ok(n.Stats) {
				snap = n.Stats
				return true
			}
		}
		return false
	})
	return snap
}

// TestTahoeThroughMunin: a server answering exactly as a Tahoe-LAFS storage
// node's web port does, a real capstats-node scraping it, a real gatherer,
// stats.json, and the tahoe_stats plugin run by munin-run.
func TestTahoeThroughMunin(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real commands and munin")
	}
	if _, err := exec.LookPath("munin-run"); err != nil {
		t.Fatal("munin-run is missing: run `make deps` (apt-get install munin-node)")
	}
	root := testbin.Root(t)
	fixture, err := os.ReadFile(filepath.Join(root, "scrape", "testdata", "tahoe-statistics.json"))
	if err != nil {
		t.Fatal(err)
	}
	tahoe := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/statistics" || r.URL.Query().Get("t") != "json" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain") // as Tahoe serves it
		w.Write(fixture)
	}))
	defer tahoe.Close()

	work := t.TempDir()
	gdir, furl, _ := startGatherer(t, work, false)
	statsPath := filepath.Join(gdir, "stats.json")
	_, id := startSidecar(t, work, "tahoe-1", furl, "--scrape", tahoe.URL+"/statistics?t=json")
	snap := entry(t, statsPath, id, "the scraped counters in stats.json", func(s stats.Snapshot) bool {
		v, ok := s.Counters.Get("storage_server.allocate")
		return ok && v.Int() == 1841
	})
	// Namespaces, ints and nulls as Tahoe reported them; the service's
	// load_monitor, cpu_monitor and node.uptime replace the sidecar's.
	for name, want := range map[string]string{
		"stats storage_server.disk_total":                    "982141542400",
		"stats storage_server.latencies.writev.mean":         "null",
		"stats storage_server.latencies.allocate.samplesize": "1000",
		"stats load_monitor.avg_load":                        "0.0123",
		"stats cpu_monitor.5min_avg":                         "0.027",
		"stats node.uptime":                                  "86402.5",
		"counters uploader.files_uploaded":                   "17",
	} {
		ns, key, _ := strings.Cut(name, " ")
		set := snap.Stats
		if ns == "counters" {
			set = snap.Counters
		}
		if v, ok := set.Get(key); !ok || v.String() != want {
			t.Errorf("stats.json %s = %v (present %v), want %s", name, v, ok, want)
		}
	}
	if v, ok := snap.Stats.Get("host.load_1"); !ok || v.IsNull() {
		t.Errorf("no host.load_1 in stats.json")
	}

	lib, plugins, conf := filepath.Join(work, "lib"), filepath.Join(work, "plugins"), filepath.Join(work, "conf")
	for _, d := range []string{lib, plugins, conf} {
		os.MkdirAll(d, 0o755)
	}
	mustRun(t, nil, filepath.Join(root, "scripts", "install-munin.sh"),
		"--lib-dir", lib, "--plugins-dir", plugins, "--conf-dir", conf,
		"--statsfile", statsPath, "--bin", testbin.Build(t, "tahoe_stats"), "--user", "root")
	field := "tahoe_1_" + id[:4]
	for graph, value := range map[string]string{
		"tahoe_storage_operations_allocate": "1841",
		"tahoe_storage_operations_get":      "9120",
		"tahoe_storage_operations_writev":   "64",
		"tahoe_storage_operations_readv":    "512",
		"tahoe_storage_bytes_added":         "73400320",
		"tahoe_storage_bytes_freed":         "1048576",
		"tahoe_storage_allocated":           "0",
		"tahoe_uploader_files_uploaded":     "17",
		"tahoe_uploader_bytes_uploaded":     "5242880",
		"tahoe_mutable_files_retrieved":     "22",
		"tahoe_helper_active_uploads":       "2",
		"tahoe_helper_upload_requests":      "5",
		"tahoe_runtime_load_peak":           "0.25",
		"tahoe_storage_disk_avail":          "518824681984", // an addition
		"tahoe_node_uptime":                 "86402.5",      // an addition
	} {
		out := mustRun(t, nil, "munin-run", "--servicedir", plugins, "--sconfdir", conf, graph)
		if want := field + ".value " + value + "\n"; out != want {
			t.Errorf("munin-run %s:\n%s\nwant\n%s", graph, out, want)
		}
	}
	// The host graphs (additions) have the sidecar's own host figures.
	out := mustRun(t, nil, "munin-run", "--servicedir", plugins, "--sconfdir", conf, "tahoe_host_load_1")
	if !regexp.MustCompile(`^` + field + `\.value [0-9.]+\n$`).MatchString(out) {
		t.Errorf("munin-run tahoe_host_load_1:\n%s", out)
	}
	config := mustRun(t, nil, "munin-run", "--servicedir", plugins, "--sconfdir", conf, "tahoe_host_load_1", "config")
	if !strings.Contains(config, "graph_category capstats\n") || !strings.Contains(config, field+".label "+field+"\n") {
		t.Errorf("munin-run tahoe_host_load_1 config:\n%s", config)
	}
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestNodeExporterThroughGatherer: Debian's prometheus-node-exporter, run by
// the test on a loopback port, scraped by a real capstats-node; its series
// reach stats.json and the gatherer's /metrics, which promtool finds clean.
func TestNodeExporterThroughGatherer(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real commands and node_exporter")
	}
	exporter, err := exec.LookPath("prometheus-node-exporter")
	if err != nil {
		t.Fatal("prometheus-node-exporter is missing: run `make deps` (scripts/ensure-deps.sh installs Debian's prometheus-node-exporter)")
	}
	port := freeTCPPort(t)
	exp := start(t, exporter, fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port))
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	testutil.WaitFor(t, "node_exporter to answer", 30*time.Second, func() bool {
		resp, err := http.Get(metricsURL)
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	work := t.TempDir()
	gdir, furl, httpURL := startGatherer(t, work, true)
	statsPath := filepath.Join(gdir, "stats.json")
	n, id := startSidecar(t, work, "exporter-host", furl, "--scrape", metricsURL, "--scrape-timeout", "5s")
	snap := entry(t, statsPath, id, "node_exporter's series in stats.json", func(s stats.Snapshot) bool {
		_, ok1 := s.Stats.Get("node_load1")
		_, ok2 := s.Counters.Get("node_context_switches_total")
		return ok1 && ok2
	})
	if v, _ := snap.Counters.Get("node_context_switches_total"); v.Kind() != stats.KindInt || v.Int() <= 0 {
		t.Errorf("node_context_switches_total = %v, want a positive int", v)
	}
	if v, _ := snap.Stats.Get("node_load1"); v.Kind() != stats.KindFloat {
		t.Errorf("node_load1 = %v, want a float", v)
	}
	if v, ok := snap.Counters.Get("node.scrape_errors"); !ok || v.Int() != 0 {
		t.Errorf("node.scrape_errors = %v (present %v)\nnode:\n%s\nexporter:\n%s", v, ok, n.out, exp.out)
	}
	if snap.Counters.Len()+snap.Stats.Len() < 200 {
		t.Errorf("only %d entries from node_exporter", snap.Counters.Len()+snap.Stats.Len())
	}

	resp, err := http.Get(httpURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, re := range []string{
		`(?m)^# TYPE node_load1 gauge$`, `(?m)^node_load1\{[^}]*nickname="exporter-host"[^}]*\} [0-9.e+-]+$`,
		`(?m)^# TYPE node_context_switches_total counter$`, `(?m)^node_context_switches_total\{[^}]*nickname="exporter-host"[^}]*\} [0-9.e+]+$`,
	} {
		if !regexp.MustCompile(re).Match(body) {
			t.Errorf("the gatherer's /metrics lacks %s", re)
		}
	}
	// node_exporter's own names break some of promtool's lint rules
	// (node_memory_MemTotal_bytes is not snake_case); the gatherer must add
	// no problem of its own to those.
	resp, err = http.Get(metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	direct, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	theirs := map[string]bool{}
	for _, p := range omtest.Promtool(t, direct) {
		theirs[p] = true
	}
	var ours []string
	for _, p := range omtest.Promtool(t, body) {
		if !theirs[p] {
			ours = append(ours, p)
		}
	}
	if len(ours) > 0 {
		t.Errorf("promtool check metrics finds %d problems in the gatherer's /metrics that node_exporter's own output does not have:\n%s", len(ours), strings.Join(ours[:min(len(ours), 30)], "\n"))
	}
}
