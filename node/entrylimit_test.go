package node

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"capstats/stats"
	"capstats/wire"
)

// TestReplyCutToGathererLimit: a node with more stats than a gatherer
// accepts is cut to the limit over a real connection, keeping the graphed
// namespaces, instead of having its whole reply refused.
func TestReplyCutToGathererLimit(t *testing.T) {
	dir := t.TempDir()
	p := NewProvider(ProviderOptions{Logger: quietLogger()})
	const scraped = 3000
	p.Register(ProducerFunc(func() stats.Map {
		m := stats.Map{"storage_server.allocated": stats.Int(42)}
		for i := range scraped {
			m[fmt.Sprintf("a_scraped_series.%04d", i)] = stats.Float(float64(i))
		}
		return m
	}))
	p.Count("storage_server.allocate", 5)
	log, logs := bufLogger(0)
	_, stop := runRealNode(t, dir, p, func(c *Config) { c.Logger = log })
	defer stop()
	g := newTestGatherer(t, 0)
	writeFurl(t, dir, g.furl())
	pr := g.nextProvide(t, 10*time.Second)

	for range 2 {
		snap := getStats(t, pr.prov) // decoded with the gatherer's default limits
		if n := snap.Counters.Len() + snap.Stats.Len(); n != wire.DefaultLimits.MaxEntries {
			t.Fatalf("reply has %d entries, want exactly the limit %d", n, wire.DefaultLimits.MaxEntries)
		}
		st, c := snap.Stats.Map(), snap.Counters.Map()
		if st["storage_server.allocated"] != stats.Int(42) || c["storage_server.allocate"] != stats.Int(5) {
			t.Errorf("graphed stats lost in the cut: allocated %v, allocate %v", st["storage_server.allocated"], c["storage_server.allocate"])
		}
		total := scraped + 1 + snap.Counters.Len() // every counter fits here
		for name := range p.Snapshot(t.Context()).Stats.All() {
			if !strings.HasPrefix(name, "a_scraped_series.") && name != "storage_server.allocated" {
				total++
			}
		}
		kept := wire.DefaultLimits.MaxEntries - 1
		if got, want := st[DroppedEntriesStat], stats.Int(int64(total-kept)); got != want {
			t.Errorf("%s = %v, want %v", DroppedEntriesStat, got, want)
		}
	}
	if n := strings.Count(logs.String(), "more stats than the gatherer accepts"); n != 1 {
		t.Errorf("cut reported %d times over two polls, want once:\n%s", n, logs.String())
	}
}

func TestEntryCapLeavesSmallRepliesAlone(t *testing.T) {
	c := newEntryCap(0)
	s := stats.Snapshot{Counters: stats.SetOf(stats.Map{"a": stats.Int(1)}), Stats: stats.SetOf(stats.Map{"b": stats.Null()})}
	got, dropped := c.apply(s)
	if dropped != 0 || !got.Counters.Equal(s.Counters) || !got.Stats.Equal(s.Stats) {
		t.Fatalf("apply changed a small reply: %v, dropped %d", got, dropped)
	}
}
