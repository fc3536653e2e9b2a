package web

import (
	"fmt"
	"math"
	"runtime"
	"testing"
	"time"

	"capstats/stats"
)

var t0 = time.Unix(1_800_000_000, 0)

func load(v float64) stats.Snapshot {
	return stats.Snapshot{Stats: stats.SetOf(stats.Map{DefaultStat: stats.Float(v), "other": stats.Int(int64(v * 10))})}
}

func TestHistorySizing(t *testing.T) {
	for _, c := range []struct {
		interval time.Duration
		points   int
		spacing  time.Duration
	}{
		{60 * time.Second, 61, time.Minute},
		{10 * time.Second, 360, 3600 * time.Second / 359},
		{time.Second, 360, 3600 * time.Second / 359},
		{5 * time.Minute, 13, 5 * time.Minute},
		{2 * time.Hour, 2, time.Hour},
	} {
		h := NewHistory(HistoryOptions{Interval: c.interval})
		if h.Points() != c.points || h.Spacing() != c.spacing {
			t.Errorf("interval %s: %d points %s apart, want %d points %s apart", c.interval, h.Points(), h.Spacing(), c.points, c.spacing)
		}
	}
}

// Polls every second are kept about every 10 s, so that 360 points span
// the whole hour; and older points fall out of the ring.
func TestHistoryKeepsTheWindow(t *testing.T) {
	h := NewHistory(HistoryOptions{Interval: time.Second, Now: func() time.Time { return t0 }})
	for s := range 2 * 3600 {
		h.Record("n1", t0.Add(time.Duration(s)*time.Second), load(float64(s)))
	}
	now := t0.Add(2 * 3600 * time.Second)
	pts := h.Series("n1", DefaultStat, now)
	if len(pts) < 340 || len(pts) > 360 {
		t.Fatalf("%d points in the last hour, want about 360", len(pts))
	}
	if first := now.Sub(pts[0].T); first < 55*time.Minute || first > time.Hour {
		t.Errorf("oldest point %s old, want close to an hour", first)
	}
	for i := 1; i < len(pts); i++ {
		if !pts[i].T.After(pts[i-1].T) {
			t.Fatalf("points out of order at %d", i)
		}
		if pts[i].V != float64(pts[i].T.Sub(t0)/time.Second) {
			t.Fatalf("point %d: value %v at %s", i, pts[i].V, pts[i].T)
		}
	}
}

func TestHistoryDropsPollsTooClose(t *testing.T) {
	h := NewHistory(HistoryOptions{Interval: time.Minute})
	h.Record("n", t0, load(1))
	h.Record("n", t0.Add(2*time.Second), load(2)) // a re-provide polls at once
	h.Record("n", t0.Add(58*time.Second), load(3))
	pts := h.Series("n", DefaultStat, t0.Add(time.Minute))
	if len(pts) != 2 || pts[0].V != 1 || pts[1].V != 3 {
		t.Errorf("got %v, want the points at 0s and 58s", pts)
	}
}

func TestHistoryMissingValuesAreNaN(t *testing.T) {
	h := NewHistory(HistoryOptions{Interval: time.Minute})
	if h.Series("n", DefaultStat, t0) != nil {
		t.Error("series of an unknown node")
	}
	h.Record("n", t0, stats.Snapshot{}) // nothing to chart yet
	if h.Series("n", DefaultStat, t0) != nil {
		t.Error("a series with no value at all should be nil")
	}
	h.Record("n", t0.Add(time.Minute), load(1))
	h.Record("n", t0.Add(2*time.Minute), stats.Snapshot{Stats: stats.SetOf(stats.Map{DefaultStat: stats.Null()})})
	pts := h.Series("n", DefaultStat, t0.Add(2*time.Minute))
	if len(pts) != 3 || !math.IsNaN(pts[0].V) || pts[1].V != 1 || !math.IsNaN(pts[2].V) {
		t.Errorf("got %v, want NaN, 1, NaN", pts)
	}
}

func TestHistoryTrackEvictsLeastRecentlyAsked(t *testing.T) {
	now := t0
	h := NewHistory(HistoryOptions{Interval: time.Minute, MaxStats: 3, Now: func() time.Time { return now }})
	h.Record("n", now, load(1))
	if got := h.Series("n", "other", now); got != nil {
		t.Errorf("untracked stat has a series: %v", got)
	}
	now = now.Add(time.Second)
	if since := h.Track("other"); !since.Equal(now) {
		t.Errorf("Track since %s, want now", since)
	}
	now = now.Add(time.Minute)
	h.Record("n", now, load(2))
	// The point from before it was tracked has no value.
	if pts := h.Series("n", "other", now); len(pts) != 2 || !math.IsNaN(pts[0].V) || pts[1].V != 20 {
		t.Errorf("other: %v", pts)
	}
	now = now.Add(time.Second)
	h.Track("b")
	now = now.Add(time.Second)
	h.Track("other") // used again: b is now the least recent
	h.Track("c")     // evicts b
	if got := fmt.Sprint(h.Tracked()); got != "[load_monitor.avg_load other c]" {
		t.Errorf("tracked %s", got)
	}
	for range 10 {
		h.Track(fmt.Sprint(time.Now().UnixNano()))
	}
	if got := h.Tracked(); got[0] != DefaultStat || len(got) != 3 {
		t.Errorf("the default stat was evicted or the cap broken: %v", got)
	}
	if pts := h.Series("n", DefaultStat, now); len(pts) != 2 {
		t.Errorf("default stat lost its points: %v", pts)
	}
}

// The memory estimate in History's comment holds: measure 1,000 nodes with
// full rings of 4 stats at P = 360 and compare per node.
func TestHistoryMemoryBound(t *testing.T) {
	if testing.Short() {
		t.Skip("slow-ish")
	}
	const nodes = 1000
	h := NewHistory(HistoryOptions{Interval: time.Second, Stats: []string{"a", "b", "c", "d"}, MaxStats: 4})
	snap := stats.Snapshot{Stats: stats.SetOf(stats.Map{"a": stats.Int(1), "b": stats.Int(2), "c": stats.Int(3), "d": stats.Int(4)})}
	ids := make([]string, nodes)
	for i := range ids {
		ids[i] = fmt.Sprintf("%032d", i)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for p := range h.Points() + 5 {
		at := t0.Add(time.Duration(p) * 11 * time.Second)
		for _, id := range ids {
			h.Record(id, at, snap)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perNode := float64(after.HeapAlloc-before.HeapAlloc) / nodes
	estimate := 700 + 4*360*(1+4.0) // the comment's formula
	t.Logf("%.0f bytes per node (estimate %.0f): %.0f MB for 10,000 nodes", perNode, estimate, perNode*10000/1e6)
	if perNode > estimate*1.25 {
		t.Errorf("%.0f bytes per node, over the documented estimate %.0f", perNode, estimate)
	}
	runtime.KeepAlive(h)
}

// A forgotten node's points go with it (gatherer.Config.OnForget).
func TestHistoryForget(t *testing.T) {
	h := NewHistory(HistoryOptions{Interval: time.Minute})
	h.Record("gone", t0, load(1))
	h.Record("kept", t0, load(2))
	h.Forget("gone")
	if h.Series("gone", DefaultStat, t0) != nil {
		t.Error("a forgotten node still has a series")
	}
	if pts := h.Series("kept", DefaultStat, t0); len(pts) != 1 || pts[0].V != 2 {
		t.Errorf("the other node's series: %v", pts)
	}
	h.mu.Lock()
	n := len(h.nodes)
	h.mu.Unlock()
	if n != 1 {
		t.Errorf("%d rings held, want 1", n)
	}
}
