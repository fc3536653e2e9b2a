package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"capstats/stats"
)

// ProducerErrorsCounter counts producer calls that panicked, did not answer
// in time, or were skipped because an earlier call was still running.
const ProducerErrorsCounter = "node.producer_errors"

// DefaultProducerTimeout is how long a snapshot waits for a producer.
const DefaultProducerTimeout = 2 * time.Second

// Producer is a source of instantaneous stats. Stats is called at every
// snapshot, possibly from a goroutine of its own; it returns the current
// values keyed by dotted name. The returned map is only read, never kept
// past the snapshot, and must not be modified afterwards by the producer.
type Producer interface {
	Stats() stats.Map
}

// ProducerFunc adapts a function to a Producer.
type ProducerFunc func() stats.Map

// Stats calls f.
func (f ProducerFunc) Stats() stats.Map { return f() }

// ErrNilProducer is returned by Register for a nil producer.
var ErrNilProducer = errors.New("node: register: producer is nil")

// ProviderOptions configures a Provider. The zero value is usable.
type ProviderOptions struct {
	// Logger receives producer failures; nil means slog.Default().
	Logger *slog.Logger
	// ProducerTimeout bounds how long a snapshot waits for each producer;
	// 0 means DefaultProducerTimeout.
	ProducerTimeout time.Duration
}

// Provider holds a node's counters and producers. All its methods are safe
// for concurrent use. Create one with NewProvider.
type Provider struct {
	log     *slog.Logger
	timeout time.Duration

	// counters is a copy-on-write map: readers load it without a lock,
	// writers (a name seen for the first time) copy it under countersMu.
	counters   atomic.Pointer[map[string]*Counter]
	countersMu sync.Mutex

	producersMu sync.Mutex
	producers   atomic.Pointer[[]*producerSlot]

	producerErrors *Counter

	// collided holds the names two producers reported, each warned about
	// once.
	collidedMu sync.Mutex
	collided   map[string]struct{}

	// last is the previous snapshot, whose names the next one shares when
	// they are the same (stats.SetLike).
	last atomic.Pointer[stats.Snapshot]
}

// NewProvider returns a Provider with no producers and one counter,
// node.producer_errors, at zero.
func NewProvider(o ProviderOptions) *Provider {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ProducerTimeout <= 0 {
		o.ProducerTimeout = DefaultProducerTimeout
	}
	p := &Provider{log: o.Logger, timeout: o.ProducerTimeout}
	p.producerErrors = p.Counter(ProducerErrorsCounter)
	return p
}

// Count adds delta to the counter called name, creating it at zero first if
// needed. For a name already seen it takes no lock and allocates nothing.
// Counters are meant to be monotonic: pass a positive delta. A new name
// copies the table of names, so names should come from a fixed set, not
// from unbounded data such as client addresses.
func (p *Provider) Count(name string, delta int64) {
	if m := p.counters.Load(); m != nil {
		if c, ok := (*m)[name]; ok {
			// Add spelled out: it is too big to inline, and a call here
			// made Count measurably slower (BENCHMARKS.md, Count).
			if !c.tryAdd(delta) {
				c.addStriped(delta)
			}
			return
		}
	}
	p.Counter(name).Add(delta)
}

// Counter returns the counter called name, creating it at zero if needed.
func (p *Provider) Counter(name string) *Counter {
	p.countersMu.Lock()
	defer p.countersMu.Unlock()
	old := p.counters.Load()
	if old != nil {
		if c, ok := (*old)[name]; ok {
			return c
		}
	}
	var m map[string]*Counter
	if old == nil {
		m = make(map[string]*Counter, 1)
	} else {
		m = make(map[string]*Counter, len(*old)+1)
		maps.Copy(m, *old)
	}
	c := new(Counter)
	m[name] = c
	p.counters.Store(&m)
	return c
}

// Register adds a producer; its stats are merged after those of every
// producer registered before it, so a later duplicate key wins (and is
// logged once per name). A nil producer, including a typed nil such as
// ProducerFunc(nil), is an error.
func (p *Provider) Register(pr Producer) error {
	if isNil(pr) {
		return ErrNilProducer
	}
	p.producersMu.Lock()
	defer p.producersMu.Unlock()
	var next []*producerSlot
	if old := p.producers.Load(); old != nil {
		next = append(next, *old...)
	}
	next = append(next, &producerSlot{p: pr, name: fmt.Sprintf("%T#%d", pr, len(next))})
	p.producers.Store(&next)
	return nil
}

func isNil(pr Producer) bool {
	if pr == nil {
		return true
	}
	switch v := reflect.ValueOf(pr); v.Kind() {
	case reflect.Pointer, reflect.Func, reflect.Chan, reflect.Interface, reflect.UnsafePointer:
		return v.IsNil()
	}
	return false
}

// Snapshot returns the counters and the merged stats of every producer.
//
// Producers run concurrently, each for at most the producer timeout (and
// never past ctx's deadline). A producer that panics, runs late, or is
// still busy with the call of an earlier snapshot that outlived its time is
// skipped and counted in node.producer_errors; the counters are read after
// the producers so this snapshot already includes those failures. Snapshot
// starts at most one call per producer at a time: a producer that never
// returns costs one goroutine, not one per poll. Concurrent snapshots share
// a producer call that is still within its time.
func (p *Provider) Snapshot(ctx context.Context) stats.Snapshot {
	var slots []*producerSlot
	if s := p.producers.Load(); s != nil {
		slots = *s
	}
	merged := make(stats.Map)
	if len(slots) > 0 {
		now := time.Now()
		calls := make([]*producerCall, len(slots))
		joined := make([]bool, len(slots))
		for i, s := range slots {
			calls[i], joined[i] = s.start(now, p.timeout)
		}
		var timer *time.Timer
		// After its wait, joined[i] says whether producer i's stats were
		// merged, for the report of a collision.
		for i, c := range calls {
			res, failure := p.wait(ctx, c, joined[i], &timer)
			slots[i].report(p, c, failure)
			joined[i] = failure == ""
			if failure == "" {
				before := len(merged)
				maps.Copy(merged, res)
				if len(merged) != before+len(res) {
					p.noteCollisions(slots, calls, joined, i)
				}
			}
		}
		if timer != nil {
			timer.Stop()
		}
	}
	var last stats.Snapshot
	if l := p.last.Load(); l != nil {
		last = *l
	}
	snap := stats.Snapshot{Counters: stats.SetLike(p.readCounters(), last.Counters), Stats: stats.SetLike(merged, last.Stats)}
	p.last.Store(&snap)
	return snap
}

// wait waits for c until its deadline or ctx is done. It returns the result
// or a description of the failure.
func (p *Provider) wait(ctx context.Context, c *producerCall, joined bool, timer **time.Timer) (stats.Map, string) {
	select {
	case <-c.done:
	default:
		d := time.Until(c.deadline)
		if d <= 0 {
			if joined {
				return nil, "still running from an earlier snapshot; skipped"
			}
			return nil, fmt.Sprintf("no answer within %v; skipped", p.timeout)
		}
		if *timer == nil {
			*timer = time.NewTimer(d)
		} else {
			(*timer).Reset(d)
		}
		select {
		case <-c.done:
		case <-(*timer).C:
			return nil, fmt.Sprintf("no answer within %v; skipped", p.timeout)
		case <-ctx.Done():
			return nil, fmt.Sprintf("snapshot abandoned: %v", context.Cause(ctx))
		}
	}
	if c.panicked != nil {
		return nil, fmt.Sprintf("panic: %v", c.panicked)
	}
	return c.result, ""
}

// maxCollisions bounds the names remembered as collided.
const maxCollisions = 1000

// noteCollisions warns, once per name, of the names producer i reported
// that an earlier merged producer reported too. calls[j].result is safe to
// read for every merged j.
func (p *Provider) noteCollisions(slots []*producerSlot, calls []*producerCall, merged []bool, i int) {
	p.collidedMu.Lock()
	defer p.collidedMu.Unlock()
	for name := range calls[i].result {
		if _, seen := p.collided[name]; seen || len(p.collided) >= maxCollisions {
			continue
		}
		for j := range i {
			if !merged[j] {
				continue
			}
			if _, dup := calls[j].result[name]; dup {
				if p.collided == nil {
					p.collided = make(map[string]struct{})
				}
				p.collided[name] = struct{}{}
				p.log.Warn("two stats producers report the same name; the later one's value is used",
					"name", name, "producer", slots[j].name, "later_producer", slots[i].name)
				break
			}
		}
	}
}

func (p *Provider) readCounters() stats.Map {
	m := p.counters.Load()
	if m == nil {
		return stats.Map{}
	}
	out := make(stats.Map, len(*m))
	for name, c := range *m {
		out[name] = stats.Int(c.Load())
	}
	return out
}

// producerSlot is one registered producer and its call in flight, if any.
type producerSlot struct {
	p    Producer
	name string // for logs: the producer's type and registration index

	mu       sync.Mutex
	inflight *producerCall
	failing  bool // the last call failed: log further failures quietly
}

// producerCall is one call of Producer.Stats; done is closed when it
// returns (or panics).
type producerCall struct {
	done     chan struct{}
	deadline time.Time

	result   stats.Map
	panicked any
	stack    []byte
}

// start begins a call of the producer, or returns the call already in
// flight (joined), so that there is never more than one.
func (s *producerSlot) start(now time.Time, timeout time.Duration) (c *producerCall, joined bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.inflight; c != nil {
		return c, true
	}
	c = &producerCall{done: make(chan struct{}), deadline: now.Add(timeout)}
	s.inflight = c
	go s.run(c)
	return c, false
}

func (s *producerSlot) run(c *producerCall) {
	defer func() {
		if r := recover(); r != nil {
			c.panicked = r
			c.stack = debug.Stack()
		}
		s.mu.Lock()
		s.inflight = nil
		s.mu.Unlock()
		close(c.done)
	}()
	c.result = s.p.Stats()
}

// report counts and logs a failure (failure != ""), or notes a recovery.
// The first failure after a success is a warning; repeats are debug lines.
func (s *producerSlot) report(p *Provider, c *producerCall, failure string) {
	s.mu.Lock()
	was := s.failing
	s.failing = failure != ""
	s.mu.Unlock()
	if failure == "" {
		if was {
			p.log.Info("stats producer answers again", "producer", s.name)
		}
		return
	}
	p.producerErrors.Add(1)
	level := slog.LevelWarn
	if was {
		level = slog.LevelDebug
	}
	p.log.Log(context.Background(), level, "stats producer failed", "producer", s.name, "err", failure)
	select {
	case <-c.done: // the call's fields are safe to read
		if c.panicked != nil && !was {
			p.log.Debug("stats producer panic stack", "producer", s.name, "stack", string(c.stack))
		}
	default:
	}
}
