//go:build linux

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"capstats/capnp/tub"
)

// maxProviders is the largest size the scale benchmarks run:
// CAPSTATS_BENCH_MAX_PROVIDERS, default 10,000 (1,000 with -short).
func maxProviders() int {
	if s := os.Getenv("CAPSTATS_BENCH_MAX_PROVIDERS"); s != "" {
		if n, err := strconv.Atoi(s); err == nil {
			return n
		}
	}
	if testing.Short() {
		return 1000
	}
	return 10000
}

// BenchmarkPollRound measures one poll round of a gatherer (this process)
// over n providers (one loadgen child process, 20 counters and 20 stats
// each, mutual TLS on 127.0.0.1). ns/op is the wall time of a round: every
// provider polled and stats.json written once. Reported beside it:
//
//	cpu-us/provider   gatherer CPU (user+sys of this process) per provider per round
//	rss-KiB/provider  growth of this process's RSS from before connecting to
//	                  after connecting and one round, both after GC, per provider
//	rss-round-KiB/provider the same right after the last round, without
//	                  collecting garbage first (what the process holds at its peak)
//	heap-KiB/provider the same for the Go heap in use, and stack-KiB/provider
//	                  for goroutine stacks
//	goroutines/provider
//	file-bytes        size of stats.json; writes/round is how many times it was written
//	write-ms          time to encode, write, fsync and rename it
func BenchmarkPollRound(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			if n > maxProviders() {
				b.Skipf("%d providers: above CAPSTATS_BENCH_MAX_PROVIDERS (or -short)", n)
			}
			benchPollRound(b, n)
		})
	}
}

func benchPollRound(b *testing.B, n int) {
	raiseNofile(b, n+256)
	g := startGatherer(b, b.TempDir(), tub.Options{})
	quiesce()
	rss0, gr0 := rssKiB(b), runtime.NumGoroutine()
	heap0, stack0 := memInUse()

	start := time.Now()
	connectProviders(b, g, n)
	connect := time.Since(start)
	ctx := context.Background()
	g.d.Gatherer().Round(ctx) // warm up: buffers, maps and the file at full size
	quiesce()
	rss1, gr1 := rssKiB(b), runtime.NumGoroutine()
	heap1, stack1 := memInUse()

	stopProfiles := startProfiles(b, n)
	writes0 := g.d.Gatherer().Metrics().Writes
	rounds, failed := 0, int64(0)
	var writeSecs float64
	cpu0 := cpuTime(b)
	for b.Loop() {
		g.d.Gatherer().Round(ctx)
		rounds++
		m := g.d.Gatherer().Metrics()
		failed += int64(n) - m.LastRoundOK
		writeSecs += m.LastWriteSeconds
	}
	cpu := cpuTime(b) - cpu0
	rssRound := rssKiB(b) // no GC: what the process holds right after a round
	stopProfiles()
	if failed > 0 {
		b.Errorf("%d polls failed or were late in %d rounds of %d providers (%d warnings logged)", failed, rounds, n, g.warns.Load())
	}
	fi, err := os.Stat(g.statsPath())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(cpu.Microseconds())/float64(rounds*n), "cpu-us/provider")
	b.ReportMetric(float64(rss1-rss0)/float64(n), "rss-KiB/provider")
	b.ReportMetric(float64(rssRound-rss0)/float64(n), "rss-round-KiB/provider")
	b.ReportMetric(float64(heap1-heap0)/1024/float64(n), "heap-KiB/provider")
	b.ReportMetric(float64(stack1-stack0)/1024/float64(n), "stack-KiB/provider")
	b.ReportMetric(float64(gr1-gr0)/float64(n), "goroutines/provider")
	b.ReportMetric(float64(fi.Size()), "file-bytes")
	b.ReportMetric(float64(g.d.Gatherer().Metrics().Writes-writes0)/float64(rounds), "writes/round")
	b.ReportMetric(writeSecs*1000/float64(rounds), "write-ms")
	b.ReportMetric(connect.Seconds(), "connect-s")
}

// startProfiles, when CAPSTATS_BENCH_PROFILES names a directory, writes
// goroutine and heap profiles of the gatherer with n providers connected
// (pollround-N.goroutine, pollround-N.heap) and a CPU profile of its rounds
// (pollround-N.cpu, written by the returned function). Read them with
// go tool pprof.
func startProfiles(b *testing.B, n int) (stop func()) {
	dir := os.Getenv("CAPSTATS_BENCH_PROFILES")
	if dir == "" {
		return func() {}
	}
	base := filepath.Join(dir, fmt.Sprintf("pollround-%d", n))
	for _, name := range []string{"goroutine", "heap"} {
		f, err := os.Create(base + "." + name)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
	f, err := os.Create(base + ".cpu")
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// memInUse returns the bytes of Go heap and of goroutine stacks in use.
func memInUse() (heap, stack int64) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse), int64(ms.StackInuse)
}

// stormProviders is the size of the handshake storm.
const stormProviders = 1000

// stormOptions bound concurrent TLS handshakes at the listener's default,
// stated here so the figure says what it was measured with.
var stormOptions = tub.Options{MaxHandshakes: 64}

// BenchmarkHandshakeStorm has 1,000 providers connect at once.
//
//   - cold: a fresh gatherer; one loadgen generates 1,000 identities, then
//     dials all of them at the same moment, all from one source address
//     (127.0.0.1), as 1,000 nodes behind one NAT would: the listener's
//     per-address limits must let them all in. storm-s runs from that
//     moment to the 1,000th provider polled.
//   - spread: the same from 64 source addresses (127.0.0.1 to 127.0.0.64),
//     as nodes on many hosts.
//   - paced: the same, but 64 dials at a time (loadgen's default): the
//     baseline for cold.
//   - restart: 1,000 providers are connected with -reconnect 100ms; the
//     gatherer is closed and started again from its basedir (same port,
//     same furl) and every provider redials. storm-s runs from the new
//     gatherer listening to the 1,000th provider polled.
//
// peak-goroutines is the most goroutines this process had during the storm;
// steady-goroutines is the count once all are connected. A bounded number of
// concurrent handshakes (tub.Options.MaxHandshakes) keeps the first close to
// the second. After the storm one round must poll every provider.
func BenchmarkHandshakeStorm(b *testing.B) {
	for _, mode := range []struct {
		name  string
		flags []string
	}{{"cold", []string{"-storm"}}, {"spread", []string{"-storm", "-sources=64"}}, {"paced", []string{"-concurrency=64"}}} {
		b.Run(mode.name, func(b *testing.B) { benchColdStorm(b, mode.flags...) })
	}
	b.Run("restart", func(b *testing.B) {
		raiseNofile(b, stormProviders+256)
		g := startGatherer(b, b.TempDir(), stormOptions)
		lg := connectProviders(b, g, stormProviders, "-storm", "-reconnect", "100ms", "-attempts", "100")
		var storm, peak, steady float64
		iters := 0
		for b.Loop() {
			gs := sampleGoroutines(time.Millisecond)
			g.restart()
			up := time.Now()
			_, last, err := g.polled.wait(stormProviders, 2*time.Minute)
			if err != nil {
				b.Fatal(err)
			}
			storm += last.Sub(up).Seconds()
			peak += float64(gs.finish())
			steady += float64(stormSteady(b, g))
			iters++
		}
		reportStorm(b, iters, storm, peak, steady)
		if err := lg.stop(); err != nil {
			b.Fatal(err)
		}
		exit, err := lg.waitLine("loadgen: exit", time.Second)
		if err != nil {
			b.Fatal(err)
		}
		if n := atoi(b, exit, "gave_up"); n > 0 {
			b.Errorf("%d of %d providers gave up", n, stormProviders)
		}
		b.ReportMetric(float64(atoi(b, exit, "gave_up")), "gave-up")
		b.ReportMetric(float64(atoi(b, exit, "dial_failures"))/float64(iters), "refused-dials")
	})
}

// benchColdStorm has a fresh gatherer and a loadgen of stormProviders that
// dials with flags (-storm: all at once; -concurrency=64: paced, the
// baseline; -sources: from several addresses). A provider that gave up
// fails the benchmark: the storm must let every node in.
func benchColdStorm(b *testing.B, flags ...string) {
	raiseNofile(b, stormProviders+256)
	var storm, peak, steady, failures float64
	iters := 0
	for b.Loop() {
		g := startGatherer(b, b.TempDir(), stormOptions)
		gs := sampleGoroutines(time.Millisecond)
		lg := startLoadgen(b, g.d.Furl, append([]string{"-n", strconv.Itoa(stormProviders), "-reconnect", "100ms", "-attempts", "100"}, flags...)...)
		dialing, err := lg.waitLine("loadgen: dialing", time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		at, err := strconv.ParseInt(dialing["at"], 10, 64)
		if err != nil {
			b.Fatalf("dialing line: %v", dialing)
		}
		_, last, err := g.polled.wait(stormProviders, 2*time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		storm += last.Sub(time.Unix(0, at)).Seconds()
		peak += float64(gs.finish())
		steady += float64(stormSteady(b, g))
		ready, err := lg.waitLine("loadgen: ready", time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		if err := lg.stop(); err != nil {
			b.Fatal(err)
		}
		if n := atoi(b, ready, "failed"); n > 0 {
			b.Errorf("%d of %d providers gave up", n, stormProviders)
			failures += float64(n)
		}
		g.close()
		iters++
	}
	reportStorm(b, iters, storm, peak, steady)
	b.ReportMetric(failures/float64(iters), "gave-up")
}

// stormSteady returns the goroutine count once the storm has settled, and
// checks that the gatherer survived it: a round polls every provider.
func stormSteady(b *testing.B, g *harnessGatherer) int {
	b.Helper()
	quiesce()
	steady := runtime.NumGoroutine()
	g.d.Gatherer().Round(context.Background())
	if ok := g.d.Gatherer().Metrics().LastRoundOK; ok != stormProviders {
		b.Fatalf("after the storm a round polled %d of %d providers", ok, stormProviders)
	}
	return steady
}

func reportStorm(b *testing.B, iters int, storm, peak, steady float64) {
	k := float64(iters)
	b.ReportMetric(storm/k, "storm-s")
	b.ReportMetric(peak/k, "peak-goroutines")
	b.ReportMetric(steady/k, "steady-goroutines")
	b.ReportMetric(float64(stormOptions.MaxHandshakes), "max-handshakes")
}

// TestHarness checks that the harness works at a small size: providers
// connect and are polled, a round polls all of them and writes the file
// once, the file has their 20 counters and 20 stats, the measurements read
// sensible values, and loadgen exits cleanly on SIGTERM.
func TestHarness(t *testing.T) {
	const n = 5
	raiseNofile(t, n+64)
	g := startGatherer(t, t.TempDir(), tub.Options{})
	lg := connectProviders(t, g, n, "-concurrency", "2")
	writes := g.d.Gatherer().Metrics().Writes
	cpu0 := cpuTime(t)
	g.d.Gatherer().Round(context.Background())
	m := g.d.Gatherer().Metrics()
	if ok := m.LastRoundOK; ok != n {
		t.Errorf("round: %d of %d ok", ok, n)
	}
	if w := m.Writes - writes; w != 1 {
		t.Errorf("round wrote the file %d times, want 1", w)
	}
	if cpuTime(t) <= cpu0 || rssKiB(t) <= 0 {
		t.Errorf("cpu time or RSS not measured: %v, %d KiB", cpuTime(t)-cpu0, rssKiB(t))
	}
	raw, err := os.ReadFile(g.statsPath())
	if err != nil {
		t.Fatal(err)
	}
	var file map[string]struct {
		Nickname string
		Stats    struct{ Counters, Stats map[string]any }
	}
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	if len(file) != n {
		t.Errorf("stats.json has %d nodes, want %d", len(file), n)
	}
	for id, node := range file {
		if len(node.Stats.Counters) != 20 || len(node.Stats.Stats) != 20 {
			t.Errorf("node %s (%s): %d counters, %d stats; want 20 and 20", id, node.Nickname, len(node.Stats.Counters), len(node.Stats.Stats))
		}
	}
	if err := lg.stop(); err != nil {
		t.Fatal(err)
	}
	exit, err := lg.waitLine("loadgen: exit", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if calls := atoi(t, exit, "calls"); calls < 2*n {
		t.Errorf("loadgen answered %d calls, want at least %d", calls, 2*n)
	}
}

// TestHarnessRestart checks the storm-after-restart harness at a small
// size: after the gatherer restarts, every provider redials and is polled
// by the new gatherer, which still polls them all in a round.
func TestHarnessRestart(t *testing.T) {
	const n = 10
	raiseNofile(t, n+64)
	g := startGatherer(t, t.TempDir(), stormOptions)
	furl := g.d.Furl.String()
	connectProviders(t, g, n, "-storm", "-reconnect", "50ms", "-attempts", "100")
	g.restart()
	if g.d.Furl.String() != furl {
		t.Fatalf("furl changed across restart: %s -> %s", furl, g.d.Furl)
	}
	if _, _, err := g.polled.wait(n, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	g.d.Gatherer().Round(context.Background())
	if ok := g.d.Gatherer().Metrics().LastRoundOK; ok != n {
		t.Errorf("round after restart: %d of %d ok", ok, n)
	}
}
