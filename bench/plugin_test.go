//go:build linux

package bench

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"capstats/internal/testbin"
	"capstats/statsfile"
)

var (
	toolMu    sync.Mutex
	toolDir   string
	toolBuilt = map[string]string{}
)

// buildTool compiles capstats/bench/cmd/<name> once per test process.
func buildTool(tb testing.TB, name string) string {
	tb.Helper()
	toolMu.Lock()
	defer toolMu.Unlock()
	if p, ok := toolBuilt[name]; ok {
		return p
	}
	if toolDir == "" {
		d, err := os.MkdirTemp("", "capstats-bench-tools-")
		if err != nil {
			tb.Fatal(err)
		}
		toolDir = d
	}
	out := filepath.Join(toolDir, name)
	cmd := exec.Command("go", "build", "-o", out, "./bench/cmd/"+name)
	cmd.Dir = testbin.Root(tb)
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build ./bench/cmd/%s: %v\n%s", name, err, b)
	}
	toolBuilt[name] = out
	return out
}

func cleanupTools() {
	toolMu.Lock()
	defer toolMu.Unlock()
	if toolDir != "" {
		os.RemoveAll(toolDir)
		toolDir = ""
	}
}

// pluginSetup is the munin plugin linked under a graph's name, the
// encoding/json baseline, and a stats file of n nodes answered just now.
type pluginSetup struct {
	graph, jsonmap, file string
}

func setupPlugin(tb testing.TB, n int) pluginSetup {
	tb.Helper()
	if _, err := os.Stat(filepath.Join(testbin.Root(tb), "cmd", "tahoe_stats")); err != nil {
		tb.Skip("no cmd/tahoe_stats yet")
	}
	dir := tb.TempDir()
	graph := filepath.Join(dir, "tahoe_runtime_load_avg")
	if err := os.Symlink(testbin.Build(tb, "tahoe_stats"), graph); err != nil {
		tb.Fatal(err)
	}
	file := filepath.Join(dir, "stats.json")
	if err := statsfile.WriteFile(file, SyntheticFile(n, time.Now())); err != nil {
		tb.Fatal(err)
	}
	return pluginSetup{graph: graph, jsonmap: buildTool(tb, "jsonmap"), file: file}
}

// run runs one whole process as munin-node would, and returns its output.
func (p pluginSetup) run(tb testing.TB, bin string, args ...string) []byte {
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"statsfile=" + p.file, "PATH=/usr/bin:/bin"}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		tb.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, errb.Bytes())
	}
	return out.Bytes()
}

// BenchmarkPlugin1000 times the munin plugin on a 1,000-node stats.json
// (20 counters and 20 stats each, 1.8 MB), each run a whole process started
// as munin-node starts it (linked as tahoe_runtime_load_avg, env statsfile):
// fetch, config, and the baseline, a process that reads the same file with
// encoding/json into a map and prints the same values. The three alternate
// so that they see the same machine load. Reported: each one's milliseconds
// per run and the plugin's over the baseline's (fetch-ratio, config-ratio).
// Target: <= 10 ms per run.
func BenchmarkPlugin1000(b *testing.B) {
	p := setupPlugin(b, 1000)
	if lines := bytes.Count(p.run(b, p.graph), []byte("\n")); lines != 1000 {
		b.Fatalf("fetch printed %d lines, want 1000", lines)
	}
	var fetch, config, baseline time.Duration
	n := 0
	for b.Loop() {
		t0 := time.Now()
		p.run(b, p.graph)
		t1 := time.Now()
		p.run(b, p.graph, "config")
		t2 := time.Now()
		p.run(b, p.jsonmap)
		fetch += t1.Sub(t0)
		config += t2.Sub(t1)
		baseline += time.Since(t2)
		n++
	}
	ms := func(d time.Duration) float64 { return d.Seconds() * 1000 / float64(n) }
	b.ReportMetric(ms(fetch), "fetch-ms")
	b.ReportMetric(ms(config), "config-ms")
	b.ReportMetric(ms(baseline), "jsonmap-ms")
	b.ReportMetric(float64(fetch)/float64(baseline), "fetch-ratio")
	b.ReportMetric(float64(config)/float64(baseline), "config-ratio")
}

// TestPluginHarness checks the plugin benchmark's pieces at a small size:
// the synthetic file is fresh enough for fetch to print every node, config
// lists every node, and the baseline prints the same values.
func TestPluginHarness(t *testing.T) {
	p := setupPlugin(t, 10)
	fetch := p.run(t, p.graph)
	if lines := bytes.Count(fetch, []byte("\n")); lines != 10 {
		t.Errorf("fetch printed %d lines, want 10:\n%s", lines, fetch)
	}
	if cfg := p.run(t, p.graph, "config"); !bytes.Contains(cfg, []byte("loadgen_9_")) {
		t.Errorf("config lacks node 9:\n%s", cfg)
	}
	base := p.run(t, p.jsonmap)
	if lines := bytes.Count(base, []byte("\n")); lines != 10 {
		t.Errorf("jsonmap printed %d lines, want 10:\n%s", lines, base)
	}
}
