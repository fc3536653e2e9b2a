package gatherer

import (
	"context"
	"io/fs"
	"os"
	"sync"
	"time"

	"capstats/statsfile"
	"capstats/wire"
)

var errNotExist = fs.ErrNotExist

// Metrics are the gatherer's own health figures, as of one moment.
type Metrics struct {
	Rounds           int64   // poll rounds run
	LastRoundSeconds float64 // how long the last round took
	LastRoundPolled  int64   // nodes polled in the last round
	LastRoundOK      int64   // of those, the ones whose poll succeeded by the write
	LastRoundFailed  int64   // and the others
	Writes           int64   // successful writes of the stats file
	WriteFailures    int64   // failed writes (the previous file kept)
	LastWriteSeconds float64 // how long the last write took, failed or not
	LastWriteBytes   int64   // size of the file at the last successful write
	// NameCache is how the gatherer's decoder served the names in replies
	// (NameCache.HitRate: the share recognised from earlier replies).
	NameCache wire.CacheStats
	// Node entries: new identities refused (rate limit, or full of nodes
	// that are up), entries evicted to make room, entries forgotten after
	// ForgetAfter.
	NodesRefused   int64
	NodesEvicted   int64
	NodesForgotten int64
}

// metrics holds the figures behind a mutex of their own, so that a
// snapshot is consistent (LastRoundOK + LastRoundFailed = LastRoundPolled)
// and reading them never waits for the gatherer's main lock.
type metrics struct {
	mu sync.Mutex
	m  Metrics
}

func (m *metrics) update(f func(*Metrics)) {
	m.mu.Lock()
	f(&m.m)
	m.mu.Unlock()
}

// Metrics returns a snapshot of the gatherer's own figures.
func (g *Gatherer) Metrics() Metrics {
	g.metrics.mu.Lock()
	m := g.metrics.m
	g.metrics.mu.Unlock()
	m.NameCache = g.dec.CacheStats()
	return m
}

// Run polls every interval until ctx is done; then it waits for the round
// in progress (whose calls time out), writes the file a last time and
// returns. The first round comes once the nodes that were up before a
// restart have answered again, or after StartGrace, so that the first file
// written does not show them all down. Between rounds, a node coming up or
// going down is written within a second (see soonWriter).
func (g *Gatherer) Run(ctx context.Context) error {
	w := &soonWriter{g: g}
	defer w.stop()
	g.settle(ctx, w)
	t := time.NewTicker(g.cfg.Interval)
	defer t.Stop()
	for {
		g.Round(ctx)
		w.wrote()
		for tick := false; !tick; {
			select {
			case <-ctx.Done():
				g.Write()
				return nil
			case <-t.C:
				tick = true
			case <-g.changed:
				w.soon()
			case <-w.due():
				w.fire()
			}
		}
	}
}

// Round polls every connected node at once, waits for them (at most
// WriteAfter, or until ctx is done), and writes the stats file once.
func (g *Gatherer) Round(ctx context.Context) {
	start := time.Now()
	g.forgetDown()
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
	g.metrics.update(func(m *Metrics) {
		m.Rounds++
		m.LastRoundSeconds = took.Seconds()
		m.LastRoundPolled, m.LastRoundOK, m.LastRoundFailed = int64(len(nodes)), int64(ok), int64(failed)
	})
	g.verbose("round: %d nodes polled, %d ok, %d failed, %s", len(nodes), ok, failed, took.Round(time.Microsecond))
}

// countRound counts the nodes whose last poll of the round succeeded;
// those still in flight count as failed for now.
func (g *Gatherer) countRound(nodes []*node) (ok, failed int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, n := range nodes {
		if n.polling == nil && n.entry.LastError == "" {
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
	g.writeMu.Lock()
	defer g.writeMu.Unlock()
	f := g.File()
	start := time.Now()
	err := statsfile.WriteFile(g.cfg.StatsFile, f)
	took := time.Since(start).Seconds()
	if err != nil {
		g.metrics.update(func(m *Metrics) { m.WriteFailures++; m.LastWriteSeconds = took })
		g.cfg.Logger.Error("writing stats file failed; the previous file is kept", "path", g.cfg.StatsFile, "err", err)
		return err
	}
	fi, statErr := os.Stat(g.cfg.StatsFile)
	g.metrics.update(func(m *Metrics) {
		m.Writes++
		m.LastWriteSeconds = took
		if statErr == nil {
			m.LastWriteBytes = fi.Size()
		}
	})
	return nil
}

// Close stops the gatherer: it ends polling, closes every node's
// connection, waits for the calls in flight and writes the stats file a
// last time (every node down), returning that write's error. Daemon.Close
// means the same and also closes the listener.
func (g *Gatherer) Close() error {
	g.mu.Lock()
	g.closed = true
	for _, n := range g.nodes {
		if n.peer != nil {
			n.entry.LastError = Stopped
			n.peer.Close() // its watcher releases the provider
		}
	}
	g.mu.Unlock()
	g.polls.Wait()
	return g.Write()
}
