package reliability

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"capstats/internal/fakenode"
	"capstats/internal/testutil"
	"capstats/statsfile"
)

// TestKillDuringWrites kills the gatherer with SIGKILL at random moments
// while 50 providers are attached and rounds run every second (the least
// `gatherer run` accepts), 20 times, the kills spread over a round and a
// half so that they land before, during and after writes.
// After every kill stats.json must parse and hold every node it held
// before, a restart must clean up any temp file the kill left, and after
// the last restart every node comes back. It asserts outcomes only; how
// fast nodes come back after a restart is bench.BenchmarkHandshakeStorm's
// "restart" case (BENCHMARKS.md).
func TestKillDuringWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("long: 20 kills of a gatherer with 50 providers")
	}
	const providers, kills = 50, 20
	dir := createGatherer(t)
	statsPath := filepath.Join(dir, "stats.json")
	g := startGatherer(t, dir, "--interval", "1s")
	furl := g.furl

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < providers; i++ {
		p := fakenode.New(t, fakenode.AnswerWith(fakenode.SnapshotOf(20)))
		wg.Add(1)
		go func() { defer wg.Done(); p.StayAttached(ctx, furl, "crash") }()
	}
	defer func() { cancel(); wg.Wait() }()

	rng := rand.New(rand.NewPCG(1, 2))
	held := map[string]bool{}
	testutil.WaitFor(t, "first nodes in stats.json", 2*time.Minute, func() bool {
		f, err := statsfile.Load(statsPath)
		return err == nil && len(f.Nodes) > 0
	})
	for k := 0; k < kills; k++ {
		time.Sleep(time.Duration(50+rng.IntN(1450)) * time.Millisecond)
		g.kill()
		f, err := statsfile.Load(statsPath)
		if err != nil {
			t.Fatalf("kill %d: stats.json does not parse: %v", k, err)
		}
		now := map[string]bool{}
		for _, n := range f.Nodes {
			now[n.TubID] = true
		}
		for id := range held {
			if !now[id] {
				t.Fatalf("kill %d: node %s vanished from stats.json", k, id)
			}
		}
		held = now
		leftovers, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
		g = startGatherer(t, dir, "--interval", "1s")
		if g.furl.String() != furl.String() {
			t.Fatalf("kill %d: furl changed on restart", k)
		}
		for _, l := range leftovers {
			if _, err := os.Stat(l); err == nil {
				t.Fatalf("kill %d: restart left temp file %s", k, l)
			}
		}
	}
	// After the last restart every node is back. The bound is only where
	// the test gives up: a busy machine may take its time.
	start := time.Now()
	took := testutil.WaitFor(t, "all nodes back up", 2*time.Minute, func() bool {
		f, err := statsfile.Load(statsPath)
		if err != nil {
			return false
		}
		up := 0
		for _, n := range f.Nodes {
			if n.Up && n.Timestamp > float64(start.Unix()) {
				up++
			}
		}
		return up == providers
	})
	t.Logf("all %d nodes back %s after the last restart", providers, took.Round(time.Millisecond))
	g.stop(t)
	if left, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*")); len(left) != 0 {
		t.Errorf("temp files after a clean stop: %v", left)
	}
}
