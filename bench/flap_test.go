//go:build linux

package bench

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"capstats/capnp/tub"
	"capstats/gatherer"
	"capstats/internal/fakenode"
)

// flapProviders is how many providers connect and disconnect at once in
// BenchmarkFlapping.
const flapProviders = 100

// BenchmarkFlapping is the throughput side of reliability.TestFlapping:
// flapProviders providers, each its own identity, connect to an in-process
// gatherer (rounds every 200 ms), provide, and disconnect, over and over;
// a quarter of them hang in getStats and drop in the middle of the call.
// One op is one connect/disconnect cycle; cycles/min is the rate the
// gatherer sustained.
func BenchmarkFlapping(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "g")
	if err := gatherer.Create(dir, gatherer.CreateOptions{Hostname: "127.0.0.1"}); err != nil {
		b.Fatal(err)
	}
	d, err := gatherer.Start(dir, gatherer.Config{Interval: 200 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}, tub.Options{})
	if err != nil {
		b.Fatal(err)
	}
	runCtx, stopRun := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { d.Run(runCtx); close(runDone) }()
	defer func() { stopRun(); <-runDone; d.Close() }()

	provs := make([]*fakenode.Provider, flapProviders)
	for i := range provs {
		if i%4 == 0 {
			provs[i] = fakenode.New(b, nil) // hangs
		} else {
			provs[i] = fakenode.New(b, fakenode.AnswerWith(fakenode.SnapshotOf(10)))
		}
	}
	var left atomic.Int64
	left.Store(int64(b.N))
	var failed atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i, p := range provs {
		wg.Add(1)
		go func(slow bool) {
			defer wg.Done()
			for left.Add(-1) >= 0 && ctx.Err() == nil {
				calls := p.Calls()
				dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
				conn, err := p.Attach(dctx, d.Furl, "flap")
				dcancel()
				if err != nil {
					failed.Add(1)
					continue
				}
				for slow && p.Calls() == calls && ctx.Err() == nil {
					time.Sleep(time.Millisecond)
				}
				conn.Close()
			}
		}(i%4 == 0)
	}
	wg.Wait()
	took := time.Since(start)
	b.StopTimer()
	if ctx.Err() != nil {
		b.Fatal("gave up after 30 minutes")
	}
	b.ReportMetric(float64(b.N)/took.Minutes(), "cycles/min")
	b.ReportMetric(float64(failed.Load()), "failed-dials")
}
