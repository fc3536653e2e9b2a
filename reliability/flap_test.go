package reliability

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"capstats/capnp/tub"
	"capstats/gatherer"
	"capstats/internal/fakenode"
	"capstats/internal/testutil"
	"capstats/statsfile"
)

// TestFlapping has 200 providers connect and disconnect 5 times each
// against an in-process gatherer, a quarter of them in the middle of a
// call every time. It asserts outcomes only, so that it holds on a busy
// machine: every cycle completes, every node is in stats.json exactly
// once and down, nothing is counted as connected, and the goroutines and
// heap return to where they were. How many cycles a minute the gatherer
// takes is bench.BenchmarkFlapping's business (BENCHMARKS.md).
func TestFlapping(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 connect/disconnect cycles of 200 providers")
	}
	const providers, cycles = 200, 5
	dir := filepath.Join(t.TempDir(), "g")
	if err := gatherer.Create(dir, gatherer.CreateOptions{Hostname: "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	d, err := gatherer.Start(dir, gatherer.Config{Interval: 200 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}, tub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stopRun := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { d.Run(runCtx); close(runDone) }()
	defer func() { stopRun(); <-runDone; d.Close() }()

	// Let the gatherer's own goroutines settle, then take the baseline.
	time.Sleep(500 * time.Millisecond)
	base, baseHeap := settle()

	// A bound to give up by, not a speed target: the cycles are counted.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var done, midCall, dialFailures, closedByGatherer atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < providers; i++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 7))
			slow := seed%4 == 0 // a quarter hang in getStats: they drop mid-call
			var p *fakenode.Provider
			if slow {
				p = fakenode.New(t, nil)
			} else {
				p = fakenode.New(t, fakenode.AnswerWith(fakenode.SnapshotOf(10)))
			}
			for c := 0; c < cycles && ctx.Err() == nil; {
				dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
				calls := p.Calls()
				conn, err := p.Attach(dctx, d.Furl, "flap")
				dcancel()
				if err != nil {
					dialFailures.Add(1)
					continue
				}
				if slow {
					// Hold the connection until a getStats hangs in it
					// (provide polls at once), then drop it mid-call. On
					// a busy machine the gatherer's 200ms polls can time
					// out before one reaches the provider, and after
					// MaxTimeouts of them it closes the connection, as it
					// should: then dial again, as a node does.
				wait:
					for p.Calls() == calls {
						select {
						case <-conn.Done():
							break wait
						case <-ctx.Done():
							break wait
						case <-time.After(5 * time.Millisecond):
						}
					}
					if p.Calls() == calls && ctx.Err() == nil {
						conn.Close()
						closedByGatherer.Add(1)
						continue
					}
					if p.Calls() > calls {
						midCall.Add(1)
					}
				} else {
					select {
					case <-time.After(time.Duration(rng.IntN(400)) * time.Millisecond):
					case <-ctx.Done():
					}
				}
				conn.Close()
				c++
				done.Add(1)
			}
		}(uint64(i))
	}
	wg.Wait()
	t.Logf("%d connect/disconnect cycles by %d providers, %d dropped mid-call, %d dials failed and were retried, %d connections closed by the gatherer before a call reached them and redialled",
		done.Load(), providers, midCall.Load(), dialFailures.Load(), closedByGatherer.Load())
	if ctx.Err() != nil {
		t.Fatalf("gave up after %s with %d of %d cycles done", 5*time.Minute, done.Load(), providers*cycles)
	}
	if want := int64(providers / 4 * cycles); midCall.Load() != want {
		t.Errorf("%d drops in the middle of a call, want %d", midCall.Load(), want)
	}

	deadline := time.Now().Add(60 * time.Second)
	for {
		n, heap := settle()
		if n <= base+5 && heap <= baseHeap+16<<20 {
			t.Logf("goroutines %d (baseline %d), heap %d KiB (baseline %d KiB)", n, base, heap>>10, baseHeap>>10)
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("after flapping: goroutines %d (baseline %d), heap %d MiB (baseline %d MiB)\n%s",
				n, base, heap>>20, baseHeap>>20, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(200 * time.Millisecond)
	}
	if c := d.Gatherer().Connected(); c != 0 {
		t.Errorf("%d nodes still counted as connected", c)
	}
	// No node lost, none twice, all down, in a file that parses.
	testutil.WaitFor(t, "a round to write every node down", 60*time.Second, func() bool {
		f, err := statsfile.Load(filepath.Join(dir, gatherer.StatsFile))
		if err != nil || len(f.Nodes) != providers {
			return false
		}
		for _, n := range f.Nodes {
			if n.Up {
				return false
			}
		}
		return true
	})
	f, err := statsfile.Load(filepath.Join(dir, gatherer.StatsFile))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, n := range f.Nodes {
		if seen[n.TubID] {
			t.Errorf("node %s twice in stats.json", n.TubID)
		}
		seen[n.TubID] = true
	}
}

func settle() (goroutines int, heap uint64) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return runtime.NumGoroutine(), m.HeapInuse
}
