package reliability

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"capstats/gatherer"
	"capstats/internal/fakenode"
)

// TestFlapping has 1,000 providers connect and disconnect for a minute,
// some of them in the middle of a call, against an in-process gatherer;
// afterwards its goroutines and heap return to where they were.
func TestFlapping(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute of 1,000 flapping providers")
	}
	const providers = 1000
	duration := 60 * time.Second
	dir := filepath.Join(t.TempDir(), "g")
	if err := gatherer.Create(dir, gatherer.CreateOptions{Hostname: "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	d, err := gatherer.Start(dir, gatherer.Config{Interval: 200 * time.Millisecond}, nil)
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

	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	var cycles, midCall atomic.Int64
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
			for ctx.Err() == nil {
				dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
				conn, err := p.Attach(dctx, d.Furl, "flap")
				dcancel()
				if err != nil {
					continue
				}
				select {
				case <-time.After(time.Duration(rng.IntN(400)) * time.Millisecond):
				case <-ctx.Done():
				}
				if slow && p.Calls() > 0 {
					midCall.Add(1)
				}
				conn.Close()
				cycles.Add(1)
			}
		}(uint64(i))
	}
	wg.Wait()
	t.Logf("%d connect/disconnect cycles by %d providers, %d dropped mid-call", cycles.Load(), providers, midCall.Load())
	if cycles.Load() < providers {
		t.Errorf("only %d cycles in %s", cycles.Load(), duration)
	}

	deadline := time.Now().Add(30 * time.Second)
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
	if c := d.Connected(); c != 0 {
		t.Errorf("%d nodes still counted as connected", c)
	}
}

func settle() (goroutines int, heap uint64) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return runtime.NumGoroutine(), m.HeapInuse
}
