package web

import (
	"math"
	"slices"
	"sync"
	"time"

	"capstats/stats"
)

// DefaultStat is the stat the status page charts unless asked for another.
const DefaultStat = "load_monitor.avg_load"

// HistoryOptions size a History.
type HistoryOptions struct {
	// Interval is the gatherer's poll interval. Default 60s.
	Interval time.Duration
	// Window is how far back charts go. Default 1h.
	Window time.Duration
	// MaxPoints caps the points kept per node and stat. Default 360: one
	// point per 10 s over an hour, whatever the interval.
	MaxPoints int
	// Stats are always kept. Default: DefaultStat.
	Stats []string
	// MaxStats caps how many stats are kept at once, Stats included (but
	// there is always room for one more); a stat the page is asked for
	// takes a free place or the place of the one asked for least recently
	// (whose points are dropped). Default 4.
	MaxStats int
	// Now is the clock used to age out requested stats. Default time.Now.
	Now func() time.Time
}

// History keeps the recent values of a few stats of every node, for the
// status page's charts. Feed it from gatherer.Config.OnPoll with Record.
//
// What it keeps, and why it stays small: only stats from the "stats"
// namespace (counters are monotonic totals, not worth a sparkline, and
// float32 would lose their low digits), only the few stats in
// HistoryOptions.Stats plus those the page was asked for (at most MaxStats
// in all), and per node a ring of P = min(MaxPoints, ceil(Window/Interval)+1)
// points: a uint32 Unix time per point and, per kept stat, a float32 per
// point (NaN when the node did not report it). Polls closer together than
// Window/(P-1) are not recorded (a re-provide polls at once), so the ring
// always spans the window.
//
// Memory, per node: about 700 bytes of bookkeeping (map entry, tub ID, ring,
// allocation rounding) plus 4·P·(1+S) bytes for S stats with data. For
// 10,000 nodes at the default 60 s interval (P = 61) and 4 stats:
// 10,000 × (700 + 4·61·5) ≈ 19 MB. The worst case, an interval of 10 s or
// less (P = 360): 10,000 × (700 + 4·360·5) ≈ 79 MB; with only the default
// stat, ≈ 36 MB. TestHistoryMemoryBound measures it.
type History struct {
	mu       sync.Mutex
	points   int
	spacing  time.Duration // between two kept points
	minGap   time.Duration // the least gap at which a poll is recorded
	window   time.Duration
	now      func() time.Time
	fixed    int      // slots [0, fixed) hold HistoryOptions.Stats
	slots    []string // stat name per slot; "" is free
	since    []time.Time
	lastUse  []time.Time
	nodes    map[string]*ring
	maxSlots int
}

// ring is one node's points; vals[slot] is nil until the stat in that slot
// has a value for the node.
type ring struct {
	times []uint32
	vals  [][]float32
	head  int // next write
	n     int // points held
}

// NewHistory returns an empty History.
func NewHistory(o HistoryOptions) *History {
	if o.Interval <= 0 {
		o.Interval = 60 * time.Second
	}
	if o.Window <= 0 {
		o.Window = time.Hour
	}
	if o.MaxPoints < 2 {
		o.MaxPoints = 360
	}
	if o.Stats == nil {
		o.Stats = []string{DefaultStat}
	}
	if o.MaxStats <= 0 {
		o.MaxStats = 4
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	var fixed []string
	for _, s := range o.Stats {
		if s != "" && !slices.Contains(fixed, s) {
			fixed = append(fixed, s)
		}
	}
	maxSlots := max(o.MaxStats, len(fixed)+1) // room for one asked-for stat
	p := int(min(int64(o.MaxPoints), int64((o.Window+o.Interval-1)/o.Interval)+1))
	spacing := o.Window / time.Duration(p-1)
	h := &History{
		points:   p,
		spacing:  spacing,
		minGap:   max(spacing-o.Interval/2, spacing/2),
		window:   o.Window,
		now:      o.Now,
		fixed:    len(fixed),
		slots:    make([]string, maxSlots),
		since:    make([]time.Time, maxSlots),
		lastUse:  make([]time.Time, maxSlots),
		nodes:    make(map[string]*ring),
		maxSlots: maxSlots,
	}
	start := o.Now()
	for i, s := range fixed {
		h.slots[i], h.since[i] = s, start
	}
	return h
}

// Window returns how far back the charts go.
func (h *History) Window() time.Duration { return h.window }

// Points returns how many points a node's ring holds.
func (h *History) Points() int { return h.points }

// Record stores a node's sample taken at at. It is cheap and never blocks
// for long, as gatherer.Config.OnPoll requires.
func (h *History) Record(tubID string, at time.Time, snap stats.Snapshot) {
	sec := at.Unix()
	if sec < 0 || sec > math.MaxUint32 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.nodes[tubID]
	if r == nil {
		r = &ring{times: make([]uint32, h.points), vals: make([][]float32, h.maxSlots)}
		h.nodes[tubID] = r
	}
	if r.n > 0 {
		last := r.times[(r.head+h.points-1)%h.points]
		if gap := at.Sub(time.Unix(int64(last), 0)); gap < h.minGap {
			return
		}
	}
	i := r.head
	r.times[i] = uint32(sec)
	for s, name := range h.slots {
		v := float32(math.NaN())
		if name != "" {
			if x, ok := snap.Stats.Get(name); ok && !x.IsNull() {
				v = float32(x.Float())
			}
		}
		if r.vals[s] == nil {
			if v != v { // NaN: nothing to keep yet
				continue
			}
			r.vals[s] = make([]float32, h.points)
			for j := range r.vals[s] {
				r.vals[s][j] = float32(math.NaN())
			}
		}
		r.vals[s][i] = v
	}
	r.head = (i + 1) % h.points
	r.n = min(r.n+1, h.points)
}

// Forget drops a node's points, for gatherer.Config.OnForget: a forgotten
// node's ring would otherwise stay until the process ends.
func (h *History) Forget(tubID string) {
	h.mu.Lock()
	delete(h.nodes, tubID)
	h.mu.Unlock()
}

// Track asks for stat to be kept from now on, and returns since when it has
// been kept (the chart has nothing before that). A stat not kept yet takes
// a free place, or the place of the requested stat used least recently.
func (h *History) Track(stat string) (since time.Time) {
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := slices.Index(h.slots, stat); s >= 0 {
		h.lastUse[s] = now
		return h.since[s]
	}
	s := slices.Index(h.slots, "")
	if s < 0 {
		s = h.fixed
		for i := h.fixed; i < len(h.slots); i++ {
			if h.lastUse[i].Before(h.lastUse[s]) {
				s = i
			}
		}
	}
	h.slots[s], h.since[s], h.lastUse[s] = stat, now, now
	for _, r := range h.nodes {
		r.vals[s] = nil
	}
	return now
}

// Tracked returns the stats kept now.
func (h *History) Tracked() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, s := range h.slots {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Point is one recorded value; V is NaN where the node did not report the
// stat.
type Point struct {
	T time.Time
	V float64
}

// Series returns a node's points of stat no older than the window before
// now, oldest first; nil if the stat is not kept or the node has no points.
func (h *History) Series(tubID, stat string, now time.Time) []Point {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := slices.Index(h.slots, stat)
	r := h.nodes[tubID]
	if s < 0 || r == nil || r.vals[s] == nil {
		return nil
	}
	from := now.Add(-h.window).Unix()
	out := make([]Point, 0, r.n)
	for k := range r.n {
		i := (r.head - r.n + k + h.points) % h.points
		if int64(r.times[i]) < from {
			continue
		}
		out = append(out, Point{T: time.Unix(int64(r.times[i]), 0), V: float64(r.vals[s][i])})
	}
	return out
}

// Spacing returns the time between two kept points of a node that is
// polled without fail.
func (h *History) Spacing() time.Duration { return h.spacing }
