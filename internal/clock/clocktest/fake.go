// Package clocktest provides a fake clock.Clock for tests.
package clocktest

import (
	"sort"
	"sync"
	"testing"
	"time"

	"capstats/internal/clock"
)

// Fake is a clock.Clock whose time moves only with Advance.
type Fake struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

// New returns a fake clock at a fixed time.
func New() *Fake {
	return &Fake{now: time.Date(2008, 4, 1, 12, 0, 0, 0, time.UTC)}
}

type fakeTimer struct {
	c    *Fake
	when time.Time
	d    time.Duration
	ch   chan time.Time
}

// Now returns the fake time.
func (c *Fake) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer returns a timer that fires when Advance reaches its time; one
// of d <= 0 has fired already.
func (c *Fake) NewTimer(d time.Duration) clock.Timer {
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
func (c *Fake) Advance(d time.Duration) {
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
func (c *Fake) Pending() []time.Duration {
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
func (c *Fake) WaitTimers(tb testing.TB, n int) []time.Duration {
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

// WaitTimer waits (in real time, up to 10 s) until n timers set for d
// (within a microsecond) are pending.
func (c *Fake) WaitTimer(tb testing.TB, d time.Duration, n int) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		found := 0
		for _, p := range c.Pending() {
			if diff := p - d; diff > -time.Microsecond && diff < time.Microsecond {
				found++
			}
		}
		if found >= n {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no timer of %v pending; pending: %v", d, c.Pending())
		}
		time.Sleep(time.Millisecond)
	}
}
