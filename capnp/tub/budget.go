package tub

import (
	"context"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// byteBudget is what all of a listener's connections may hold of incoming
// messages at once, and what those from one source address may. A message
// takes its size from both once its frame header has arrived and before
// its body is read, and gives it back when it is released. A connection
// that finds either spent is not read until there is room, so that its
// peer is held back by TCP instead of making this side allocate: the
// per-connection bounds alone let many connections hold their sum, and the
// share of one address keeps a single host from taking the whole budget
// from nodes elsewhere.
type byteBudget struct {
	sem     *semaphore.Weighted // first come, first served: a small message is not overtaken for ever by big ones
	max     int64
	perAddr int64
	used    atomic.Int64
	epoch   time.Time
	// waiting is how many messages wait for room in the whole budget (not
	// in an address's share): while there are any, the listener closes
	// connections whose message has been arriving longer than a grace.
	waiting atomic.Int64
	// waits counts messages that found the budget spent, and waited the
	// time they waited in total.
	waits  atomic.Int64
	waited atomic.Int64 // nanoseconds
}

func newByteBudget(max, perAddr uint64) *byteBudget {
	return &byteBudget{sem: semaphore.NewWeighted(int64(max)), max: int64(max), perAddr: int64(min(perAddr, max)), epoch: time.Now()}
}

// newAddrShare returns the budget of one source address.
func (b *byteBudget) newAddrShare() *semaphore.Weighted { return semaphore.NewWeighted(b.perAddr) }

// take takes n bytes from the address's share and the budget, waiting for
// room until ctx ends; it calls waiting before it waits. It reports whether
// it took them; n must exceed neither.
func (b *byteBudget) take(ctx context.Context, share *semaphore.Weighted, n int64, waiting func()) bool {
	if share.TryAcquire(n) {
		if b.sem.TryAcquire(n) {
			b.used.Add(n)
			return true
		}
		waiting()
	} else {
		waiting()
		if !b.wait(ctx, share, n, nil) {
			return false
		}
	}
	if !b.sem.TryAcquire(n) && !b.wait(ctx, b.sem, n, &b.waiting) {
		share.Release(n)
		return false
	}
	b.used.Add(n)
	return true
}

// wait acquires n of sem, counted in waiters while it waits.
func (b *byteBudget) wait(ctx context.Context, sem *semaphore.Weighted, n int64, waiters *atomic.Int64) bool {
	b.waits.Add(1)
	if waiters != nil {
		waiters.Add(1)
		defer waiters.Add(-1)
	}
	start := time.Now()
	err := sem.Acquire(ctx, n)
	b.waited.Add(int64(time.Since(start)))
	return err == nil
}

// now is a monotonic clock for codec.reading: nanoseconds since the budget
// was made, never zero.
func (b *byteBudget) now() int64 { return int64(time.Since(b.epoch)) + 1 }

// give gives back n bytes taken from share and the budget. A nil budget
// gives back nothing.
func (b *byteBudget) give(share *semaphore.Weighted, n int64) {
	if b == nil || n == 0 {
		return
	}
	b.used.Add(-n)
	b.sem.Release(n)
	share.Release(n)
}
