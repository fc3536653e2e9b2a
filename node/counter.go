package node

import (
	"math/bits"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
)

// Counter is one counter of a Provider. Provider.Counter returns it so that
// a hot path can keep it and skip the name lookup of Count.
//
// A counter starts as one int64. The first time two goroutines collide on
// it (a compare-and-swap that fails) it grows stripes, one per core and
// each on cache lines of its own, and later adds go to the stripe of the
// core they run on: cores adding to one counter then stop taking a cache
// line from each other on every add. This is the design of Java's
// LongAdder; the core's stripe comes from a sync.Pool token, since the
// pool is the standard library's only per-core storage.
type Counter struct {
	base    atomic.Int64
	stripes atomic.Pointer[counterStripes]
	_       [stripeSize - 16]byte
}

// stripeSize keeps stripes a pair of cache lines apart: x86 cores fetch
// lines in aligned pairs, so stripes on adjacent lines still interfere.
const stripeSize = 128

type counterStripe struct {
	n atomic.Int64
	_ [stripeSize - 8]byte
}

// counterStripes is read on every add; its padding keeps any small object
// that something else writes all the time off its cache lines (in the
// benchmarks, the testing package's per-goroutine counter did just that).
type counterStripes struct {
	mask    uint32
	stripes []counterStripe
	_       [stripeSize - 32]byte
}

// stripeTokens hands each core (each P) a stripe number that stays with
// it: a goroutine takes the token of the core it runs on and puts it back.
// After a garbage collection empties the pool, New deals fresh numbers in
// turn, so cores still land on different stripes. Tokens are padded like
// the stripes: each is read on every striped add, and no object that
// something else writes may share its cache lines.
var (
	nextStripe   atomic.Uint32
	stripeTokens = sync.Pool{New: func() any {
		return &stripeToken{stripe: nextStripe.Add(1)}
	}}
)

type stripeToken struct {
	stripe uint32
	_      [stripeSize - 4]byte
}

// Add adds delta to the counter.
func (c *Counter) Add(delta int64) {
	if !c.tryAdd(delta) {
		c.addStriped(delta)
	}
}

// tryAdd is the uncontended path of Add, small enough to be inlined into
// callers: it adds delta to the single int64 unless the counter has
// stripes or another goroutine got there first.
func (c *Counter) tryAdd(delta int64) bool {
	if c.stripes.Load() != nil {
		return false
	}
	old := c.base.Load()
	return c.base.CompareAndSwap(old, old+delta)
}

// addStriped adds delta to the stripe of the core it runs on, growing the
// stripes first if the counter has none yet. A core that finds its stripe
// taken by another core (a failed compare-and-swap) moves to a random one,
// so cores that were dealt the same stripe soon part.
func (c *Counter) addStriped(delta int64) {
	s := c.stripes.Load()
	if s == nil {
		c.stripes.CompareAndSwap(nil, newCounterStripes())
		s = c.stripes.Load()
	}
	t := stripeTokens.Get().(*stripeToken)
	st := &s.stripes[t.stripe&s.mask]
	old := st.n.Load()
	if !st.n.CompareAndSwap(old, old+delta) {
		t.stripe = rand.Uint32()
		st.n.Add(delta)
	}
	stripeTokens.Put(t)
}

// newCounterStripes makes twice as many stripes as there are cores, at
// least 8 (1 KiB), so that a core moving to a random stripe seldom lands
// on a busy one.
func newCounterStripes() *counterStripes {
	n := 1 << bits.Len(uint(2*runtime.GOMAXPROCS(0)-1))
	n = min(max(n, 8), 256)
	return &counterStripes{mask: uint32(n - 1), stripes: make([]counterStripe, n)}
}

// Load returns the counter's value. Adds that run while it sums the stripes
// may or may not be included, as with any read of a moving counter.
func (c *Counter) Load() int64 {
	n := c.base.Load()
	if s := c.stripes.Load(); s != nil {
		for i := range s.stripes {
			n += s.stripes[i].n.Load()
		}
	}
	return n
}
