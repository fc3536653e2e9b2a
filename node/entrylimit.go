package node

import (
	"cmp"
	"slices"
	"strings"
	"sync/atomic"

	"capstats/stats"
	"capstats/wire"
)

// DroppedEntriesStat counts the entries left out of the last reply to the
// gatherer because the node had more than the gatherer accepts.
const DroppedEntriesStat = "node.entries_dropped"

// graphedPrefixes are the namespaces the munin graphs read. When a reply
// must be cut, these are kept first, so a large scrape target cannot push
// a storage node's own stats out of its graphs.
var graphedPrefixes = []string{
	"storage_server.", "load_monitor.", "cpu_monitor.", "node.", "host.",
	"uploader.", "downloader.", "helper.", "chk_upload_helper.", "mutable.",
}

// entryCap keeps a reply within what the gatherer accepts: the gatherer
// refuses a whole reply over its limit, and a node with a few thousand
// scraped series would otherwise vanish from the gatherer altogether.
type entryCap struct {
	max     int
	dropped atomic.Int64 // in the last reply cut, or 0
}

func newEntryCap(max int) *entryCap {
	if max <= 0 {
		max = wire.DefaultLimits.MaxEntries
	}
	return &entryCap{max: max}
}

// apply returns s, or s cut to c.max entries (one of them the count of
// what was dropped), and how many were dropped.
func (c *entryCap) apply(s stats.Snapshot) (stats.Snapshot, int) {
	total := s.Counters.Len() + s.Stats.Len()
	if total <= c.max {
		c.dropped.Store(0)
		return s, 0
	}
	type entry struct {
		name    string
		v       stats.Value
		counter bool
	}
	all := make([]entry, 0, total)
	for name, v := range s.Counters.All() {
		all = append(all, entry{name, v, true})
	}
	for name, v := range s.Stats.All() {
		if name != DroppedEntriesStat {
			all = append(all, entry{name, v, false})
		}
	}
	rank := func(name string) int {
		for _, p := range graphedPrefixes {
			if strings.HasPrefix(name, p) {
				return 0
			}
		}
		return 1
	}
	slices.SortFunc(all, func(a, b entry) int {
		return cmp.Or(cmp.Compare(rank(a.name), rank(b.name)), strings.Compare(a.name, b.name))
	})
	keep := all[:c.max-1]
	counters, st := stats.Map{}, stats.Map{}
	for _, e := range keep {
		if e.counter {
			counters[e.name] = e.v
		} else {
			st[e.name] = e.v
		}
	}
	dropped := len(all) - len(keep)
	st[DroppedEntriesStat] = stats.Int(int64(dropped))
	c.dropped.Store(int64(dropped))
	return stats.Snapshot{Counters: stats.SetOf(counters), Stats: stats.SetOf(st)}, dropped
}
