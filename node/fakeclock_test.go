package node

import (
	"sort"
	"sync"
	"testing"
	"time"
)

// fakeClock is a Clock whose time moves only with Advance.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2008, 4, 1, 12, 0, 0, 0, time.UTC)}
}

type fakeTimer struct {
	c    *fakeClock
	when time.Time
	d    time.Duration
	ch   chan time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, when: c.now.Add(d), d: d, ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.ch <- c.now
		return t
	}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	for i, x := range t.c.timers {
		if x == t {
			t.c.timers = append(t.c.timers[:i], t.c.timers[i+1:]...)
			return true
		}
	}
	return false
}

// Advance moves the time forward by d and fires the timers that are due,
// earliest first.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	sort.SliceStable(c.timers, func(i, j int) bool { return c.timers[i].when.Before(c.timers[j].when) })
	keep := c.timers[:0]
	for _, t := range c.timers {
		if t.when.After(c.now) {
			keep = append(keep, t)
			continue
		}
		t.ch <- c.now
	}
	c.timers = keep
}

// Pending returns the durations the pending timers were set for.
func (c *fakeClock) Pending() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []time.Duration
	for _, t := range c.timers {
		out = append(out, t.d)
	}
	return out
}

// WaitTimers waits (in real time, up to 10 s) until at least n timers are
// pending, and returns the durations they were set for.
func (c *fakeClock) WaitTimers(tb testing.TB, n int) []time.Duration {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if p := c.Pending(); len(p) >= n {
			return p
		}
		if time.Now().After(deadline) {
			tb.Fatalf("fake clock: %d timers pending after 10 s, want %d", len(c.Pending()), n)
		}
		time.Sleep(time.Millisecond)
	}
}
