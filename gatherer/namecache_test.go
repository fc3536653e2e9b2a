package gatherer

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"capstats/capnp/statsrpc"
	"capstats/internal/fakenode"
	"capstats/internal/testutil"
	"capstats/stats"
)

// Each gatherer decodes with caches of its own, and its Metrics say how
// well they serve: a node that sends the same names every poll is served
// from the cache, while a node on another gatherer in the same process
// making up names every poll costs this one nothing.
func TestNameCachePerGatherer(t *testing.T) {
	steady, _ := startDaemon(t, Config{Interval: 20 * time.Millisecond})
	// The inventor's gatherer polls when the test says, so that it passes
	// its bound in as few polls as that takes, however busy the machine.
	other, _ := startDaemon(t, Config{Interval: time.Hour, Timeout: 20 * time.Second})
	fakenode.Connect(t, steady.Furl, "steady", fakenode.AnswerWith(sample))
	var k atomic.Int64
	fakenode.Connect(t, other.Furl, "inventor", func(call statsrpc.Provider_getStats) error {
		made := stats.Map{"made.up." + strconv.FormatInt(k.Add(1), 10): stats.Int(1)}
		return fakenode.AnswerWith(stats.Snapshot{Counters: stats.SetOf(made)})(call)
	})
	const polls = 300 // past the 256 blobs a decoder keeps
	testutil.WaitFor(t, "the inventor connected", 20*time.Second, func() bool { return other.Gatherer().Connected() == 1 })
	for other.Gatherer().Metrics().NameCache.Misses < polls {
		other.Gatherer().Round(context.Background())
	}
	testutil.WaitFor(t, "steady polls served from the cache", 60*time.Second, func() bool {
		return steady.Gatherer().Metrics().NameCache.Hits >= 20
	})
	s, o := steady.Gatherer().Metrics().NameCache, other.Gatherer().Metrics().NameCache
	t.Logf("steady gatherer: %+v, rate %.3f; inventor's: %+v, rate %.3f", s, s.HitRate(), o, o.HitRate())
	// The steady node's two blobs (counters, stats) were read once each.
	if s.Misses != 2 || s.NameSets != 2 || s.Interned != sample.Counters.Len()+sample.Stats.Len() {
		t.Errorf("steady gatherer's cache: %+v, want 2 misses, 2 blobs, %d names", s, sample.Counters.Len()+sample.Stats.Len())
	}
	if s.HitRate() < 0.9 {
		t.Errorf("steady gatherer's hit rate %.3f", s.HitRate())
	}
	if o.Hits != 0 || o.NameSets > 256 || o.Interned > 4096 {
		t.Errorf("the inventor's gatherer: %+v, want no hits and its bounds kept", o)
	}
}
