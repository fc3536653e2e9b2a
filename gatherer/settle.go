package gatherer

import (
	"context"
	"time"
)

// changeWriteGap is the shortest time between two writes made for changes
// between rounds: a storm of reconnects makes one write a second, not one
// per node.
const changeWriteGap = time.Second

// soonWriter writes the stats file for a change between rounds: at once if
// the last write is changeWriteGap old, otherwise when it is. It belongs to
// Run's goroutine.
type soonWriter struct {
	g     *Gatherer
	last  time.Time
	timer *time.Timer
}

// wrote notes a write made by a round; it covers any pending change.
func (w *soonWriter) wrote() {
	w.stop()
	w.last = time.Now()
}

// soon asks for a write within changeWriteGap.
func (w *soonWriter) soon() {
	if w.timer != nil {
		return // one is pending, and will see this change too
	}
	wait := changeWriteGap - time.Since(w.last)
	if wait <= 0 {
		w.fire()
		return
	}
	w.timer = time.NewTimer(wait)
}

// due is ready when a pending write is; nil (never ready) when none is.
func (w *soonWriter) due() <-chan time.Time {
	if w.timer == nil {
		return nil
	}
	return w.timer.C
}

func (w *soonWriter) fire() {
	w.stop()
	w.g.Write()
	w.last = time.Now()
}

func (w *soonWriter) stop() {
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
}

// settle waits, before the first round after a restart, until every node
// that answered shortly before has answered again, or StartGrace has
// passed. Each node that answers meanwhile is written within a second.
// Without this the first round, at once, would find no node connected and
// write every one down, and the file would say so until the next round.
func (g *Gatherer) settle(ctx context.Context, w *soonWriter) {
	since := g.cfg.Now()
	expect := g.recentlyUp(since)
	if len(expect) == 0 {
		return
	}
	grace := time.NewTimer(g.cfg.StartGrace)
	defer grace.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-grace.C:
			return
		case <-g.changed:
			if g.answeredSince(expect, since) {
				return
			}
			w.soon()
		case <-w.due():
			w.fire()
		}
	}
}

// recentlyUp returns the nodes with a sample from the last few intervals
// before now: those worth waiting for after a restart. Nodes down for
// longer may be gone for good.
func (g *Gatherer) recentlyUp(now time.Time) []string {
	cutoff := epoch(now.Add(-max(3*g.cfg.Interval, 5*time.Minute)))
	g.mu.Lock()
	defer g.mu.Unlock()
	var ids []string
	for _, id := range g.order {
		if g.nodes[id].entry.Timestamp >= cutoff {
			ids = append(ids, id)
		}
	}
	return ids
}

// answeredSince reports whether every node of ids (still known) has
// answered a poll since t.
func (g *Gatherer) answeredSince(ids []string, t time.Time) bool {
	at := epoch(t)
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, id := range ids {
		if n, ok := g.nodes[id]; ok && n.entry.Timestamp < at {
			return false
		}
	}
	return true
}
