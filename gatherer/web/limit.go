package web

import (
	"slices"

	"capstats/openmetrics"
	"capstats/stats"
)

// capSeries cuts nodes so that their entries add up to at most max: it
// finds the largest share c such that every node keeping min(its entries,
// c) fits, and cuts the nodes above c to their first c entries (counters
// first, each set in name order). So a node cannot push others out by
// sending many entries, and nodes with a usual number keep all of theirs.
// It returns how many entries it left out.
func capSeries(nodes []openmetrics.Node, max int) int {
	total := 0
	counts := make([]int, len(nodes))
	for i := range nodes {
		counts[i] = nodes[i].Stats.Counters.Len() + nodes[i].Stats.Stats.Len()
		total += counts[i]
	}
	if total <= max {
		return 0
	}
	sorted := slices.Clone(counts)
	slices.Sort(sorted)
	// Water-filling: after the k smallest are kept whole, the rest share
	// what is left equally.
	share, left := 0, max
	for k, n := range sorted {
		rest := len(sorted) - k
		if n*rest > left {
			share = left / rest
			break
		}
		left -= n
	}
	dropped := 0
	for i := range nodes {
		if counts[i] <= share {
			continue
		}
		nodes[i].Stats = firstEntries(nodes[i].Stats, share)
		dropped += counts[i] - share
	}
	return dropped
}

// firstEntries is snap cut to n entries: counters in name order, then
// stats in name order.
func firstEntries(snap stats.Snapshot, n int) stats.Snapshot {
	take := func(set stats.Set) stats.Set {
		m := stats.Map{}
		for name, v := range set.Sorted() {
			if n == 0 {
				break
			}
			m[name] = v
			n--
		}
		return stats.SetOf(m)
	}
	c := take(snap.Counters)
	return stats.Snapshot{Counters: c, Stats: take(snap.Stats)}
}
