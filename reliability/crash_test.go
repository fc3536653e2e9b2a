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
// while 200 providers are attached and rounds run every 200ms, 50 times.
// After every kill stats.json must parse and hold every node it held
// before, and a restart must clean up any temp file the kill left.
func TestKillDuringWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("long: 50 kills of a gatherer with 200 providers")
	}
	const providers, kills = 200, 50
	dir := createGatherer(t)
	statsPath := filepath.Join(dir, "stats.json")
	g := startGatherer(t, dir, "--interval", "200ms")
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
	testutil.WaitFor(t, "first nodes in stats.json", 30*time.Second, func() bool {
		f, err := statsfile.Load(statsPath)
		return err == nil && len(f.Nodes) > 0
	})
	for k := 0; k < kills; k++ {
		time.Sleep(time.Duration(50+rng.IntN(400)) * time.Millisecond)
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
		g = startGatherer(t, dir, "--interval", "200ms")
		if g.furl.String() != furl.String() {
			t.Fatalf("kill %d: furl changed on restart", k)
		}
		for _, l := range leftovers {
			if _, err := os.Stat(l); err == nil {
				t.Fatalf("kill %d: restart left temp file %s", k, l)
			}
		}
	}
	if len(held) < providers/2 {
		t.Errorf("only %d of %d nodes ever reached stats.json", len(held), providers)
	}
	// After the last restart every node is back within 5 s.
	start := time.Now()
	testutil.WaitFor(t, "all nodes back up", 30*time.Second, func() bool {
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
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("nodes took %s to come back after a restart, want <= 5s", took)
	}
	g.stop(t)
	if left, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*")); len(left) != 0 {
		t.Errorf("temp files after a clean stop: %v", left)
	}
}
