package tub

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"capstats/internal/clock"
)

// Attempt is one connection attempt of a Reconnector: it connects, uses
// the connection and returns once the connection has ended, having closed
// it. established reports that a connection was made (the next wait then
// starts the schedule again); err says why the attempt failed or the
// connection ended. An Attempt returns soon after ctx is done.
type Attempt func(ctx context.Context) (established bool, err error)

// Retry is what a Reconnector tells OnRetry after an attempt.
type Retry struct {
	// Established reports that the attempt made a connection, which then
	// ended.
	Established bool
	// Err says why the attempt failed or the connection ended; never nil.
	Err error
	// Failures counts the attempts in a row, this one included, that made
	// no connection; 0 when Established.
	Failures int
	// Delay is how long the Reconnector waits before the next attempt.
	Delay time.Duration
}

// ErrGaveUp is returned by Reconnector.Run after MaxFailures failures in a
// row.
var ErrGaveUp = errors.New("tub: reconnector gave up")

// ReconnectOptions configure a Reconnector. The zero value is usable.
type ReconnectOptions struct {
	// Backoff is the schedule of waits between attempts.
	Backoff Backoff
	// MaxFailures ends Run after that many attempts in a row made no
	// connection; 0 means never.
	MaxFailures int
	// OnRetry, if set, is called from Run after every attempt, before
	// the wait, unless Run is stopping.
	OnRetry func(Retry)
	// Clock paces the waits; nil means the system clock. Its type is
	// internal: only this module sets it, to the clock its tests drive.
	Clock clock.Clock
}

// Reconnector keeps a connection up, as Foolscap's Reconnector does for a
// furl: it runs an Attempt, and whenever one ends, waits as its Backoff
// says and runs the next, until it is stopped. It knows nothing of what
// the connection is for; the Attempt does.
type Reconnector struct {
	attempt Attempt
	opts    ReconnectOptions
	clock   clock.Clock

	wake chan struct{} // RetryNow's poke; buffered

	mu         sync.Mutex
	attempting bool // an attempt is in progress: RetryNow does nothing
}

// NewReconnector returns a Reconnector that runs attempt.
func NewReconnector(attempt Attempt, opts ReconnectOptions) *Reconnector {
	return &Reconnector{attempt: attempt, opts: opts, clock: clock.Or(opts.Clock), wake: make(chan struct{}, 1)}
}

// Run makes attempts until ctx is done, and returns ctx.Err(), or until
// MaxFailures attempts in a row failed, and returns an error that matches
// ErrGaveUp and wraps the last failure. Run must not be called again
// before it returns.
func (r *Reconnector) Run(ctx context.Context) error {
	bo := r.opts.Backoff
	failures := 0
	for {
		established, err := r.run(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil {
			err = errors.New("connection closed")
		}
		if established {
			failures = 0
			bo.Reset()
		} else {
			failures++
			if r.opts.MaxFailures > 0 && failures >= r.opts.MaxFailures {
				return fmt.Errorf("%w after %d failures: %w", ErrGaveUp, failures, err)
			}
		}
		d := bo.Next()
		if r.opts.OnRetry != nil {
			r.opts.OnRetry(Retry{Established: established, Err: err, Failures: failures, Delay: d})
		}
		if !r.wait(ctx, d) {
			return ctx.Err()
		}
	}
}

// run makes one attempt; a RetryNow before it is spent.
func (r *Reconnector) run(ctx context.Context) (bool, error) {
	r.mu.Lock()
	r.attempting = true
	select {
	case <-r.wake:
	default:
	}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.attempting = false
		r.mu.Unlock()
	}()
	return r.attempt(ctx)
}

// wait waits d, or less if RetryNow is called; it reports false if ctx
// ended it.
func (r *Reconnector) wait(ctx context.Context, d time.Duration) bool {
	t := r.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
	case <-r.wake:
	}
	return true
}

// RetryNow ends the wait between attempts, so that the next attempt
// starts at once, as Foolscap's Reconnector.reset does. Between attempts
// (during the wait, or just before it) it takes effect; during an attempt
// it does nothing. It does not change the schedule.
func (r *Reconnector) RetryNow() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.attempting {
		return
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}
