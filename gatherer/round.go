package gatherer

import (
	"context"
	"io/fs"
	"math"
	"os"
	"sync/atomic"
	"time"

	"capstats/statsfile"
)

var errNotExist = fs.ErrNotExist

// Metrics are the gatherer's own health figures.
type Metrics struct {
	Rounds           atomic.Int64
	LastRoundSeconds atomic.Uint64 // math.Float64bits
	Writes           atomic.Int64
	WriteFailures    atomic.Int64
	LastWriteSeconds atomic.Uint64 // math.Float64bits
	LastWriteBytes   atomic.Int64
	LastRoundPolled  atomic.Int64
	LastRoundFailed  atomic.Int64
	LastRoundOK      atomic.Int64
}

// Metrics returns the gatherer's own counters.
func (g *Gatherer) Metrics() *Metrics { return &g.metrics }

// Run polls every interval, starting at once, until ctx is done; then it
// waits for the round in progress (whose calls time out), writes the file
// a last time and returns.
func (g *Gatherer) Run(ctx context.Context) error {
	t := time.NewTicker(g.cfg.Interval)
	defer t.Stop()
	for {
		g.Round(ctx)
		select {
		case <-ctx.Done():
			g.Write()
			return nil
		case <-t.C:
		}
	}
}

// Round polls every connected node at once, waits for them (at most
// WriteAfter, or until ctx is done), and writes the stats file once.
func (g *Gatherer) Round(ctx context.Context) {
	start := time.Now()
	g.mu.Lock()
	nodes := make([]*node, 0, len(g.nodes))
	for _, id := range g.order {
		if n := g.nodes[id]; n.peer != nil {
			nodes = append(nodes, n)
		}
	}
	g.mu.Unlock()

	pollCtx, cancel := context.WithTimeout(context.Background(), g.cfg.Timeout)
	round := &pollRound{ctx: pollCtx}
	for _, n := range nodes {
		g.pollNode(n, round)
	}
	all := make(chan struct{})
	go func() {
		round.wg.Wait() // late polls may outlive the round; their deadline stays
		cancel()
		close(all)
	}()
	wait := time.NewTimer(g.cfg.WriteAfter)
	if g.cfg.WriteAfter >= g.cfg.Timeout {
		// Every call ends by its timeout anyway: wait for all of them.
		wait.Stop()
	}
	select {
	case <-all:
	case <-wait.C:
	case <-ctx.Done():
	}
	wait.Stop()

	ok, failed := g.countRound(nodes)
	g.Write()
	took := time.Since(start)
	g.metrics.Rounds.Add(1)
	storeFloat(&g.metrics.LastRoundSeconds, took.Seconds())
	g.metrics.LastRoundPolled.Store(int64(len(nodes)))
	g.metrics.LastRoundOK.Store(int64(ok))
	g.metrics.LastRoundFailed.Store(int64(failed))
	g.verbose("round: %d nodes polled, %d ok, %d failed, %s", len(nodes), ok, failed, took.Round(time.Microsecond))
}

// countRound counts the nodes whose last poll of the round succeeded;
// those still in flight count as failed for now.
func (g *Gatherer) countRound(nodes []*node) (ok, failed int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, n := range nodes {
		if !n.polling && n.entry.LastError == "" {
			ok++
		} else {
			failed++
		}
	}
	return ok, failed
}

// File returns the current contents of the stats file, in file order.
func (g *Gatherer) File() *statsfile.File {
	g.mu.Lock()
	defer g.mu.Unlock()
	f := &statsfile.File{Nodes: make([]statsfile.Node, 0, len(g.order))}
	for _, id := range g.order {
		f.Nodes = append(f.Nodes, g.nodes[id].entry)
	}
	return f
}

// Write writes the stats file now. A failure is logged and counted; the
// previous file stays intact and the next round tries again.
func (g *Gatherer) Write() error {
	if g.cfg.StatsFile == "" {
		return nil
	}
	f := g.File()
	start := time.Now()
	err := statsfile.WriteFile(g.cfg.StatsFile, f)
	storeFloat(&g.metrics.LastWriteSeconds, time.Since(start).Seconds())
	if err != nil {
		g.metrics.WriteFailures.Add(1)
		g.cfg.Logger.Error("writing stats file failed; the previous file is kept", "path", g.cfg.StatsFile, "err", err)
		return err
	}
	g.metrics.Writes.Add(1)
	if fi, err := os.Stat(g.cfg.StatsFile); err == nil {
		g.metrics.LastWriteBytes.Store(fi.Size())
	}
	return nil
}

// Close ends polling: it closes every node's connection and waits for the
// calls in flight.
func (g *Gatherer) Close() {
	g.mu.Lock()
	g.closed = true
	for _, n := range g.nodes {
		if n.peer != nil {
			n.peer.Close() // its watcher releases the provider
		}
	}
	g.mu.Unlock()
	g.polls.Wait()
}

func storeFloat(a *atomic.Uint64, f float64) { a.Store(math.Float64bits(f)) }

// LoadFloat reads a float stored in one of the Metrics fields.
func LoadFloat(a *atomic.Uint64) float64 { return math.Float64frombits(a.Load()) }
