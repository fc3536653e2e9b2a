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
	// waits counts messages that found the budget spent, and waited the
	// time they waited in total.
	waits  atomic.Int64
	waited atomic.Int64 // nanoseconds
}

func newByteBudget(max, perAddr uint64) *byteBudget {
	return &byteBudget{sem: semaphore.NewWeighted(int64(max)), max: int64(max), perAddr: int64(min(perAddr, max))}
}

// newAddrShare returns the budget of one source address.
func (b *byteBudget) newAddrShare() *semaphore.Weighted { return semaphore.NewWeighted(b.perAddr) }

// take takes n bytes from the address's share and the budget, waiting for
// room until ctx ends, and then calls waited if it had to wait. It reports
// whether it took them; n must exceed neither.
func (b *byteBudget) take(ctx context.Context, share *semaphore.Weighted, n int64, waited func()) bool {
	if share.TryAcquire(n) {
		if b.sem.TryAcquire(n) {
			b.used.Add(n)
			return true
		}
	} else if !b.wait(ctx, share, n) {
		return false
	}
	if !b.sem.TryAcquire(n) && !b.wait(ctx, b.sem, n) {
		share.Release(n)
		return false
	}
	b.used.Add(n)
	waited()
	return true
}

func (b *byteBudget) wait(ctx context.Context, sem *semaphore.Weighted, n int64) bool {
	b.waits.Add(1)
	start := time.Now()
	err := sem.Acquire(ctx, n)
	b.waited.Add(int64(time.Since(start)))
	return err == nil
}

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
