package node

import "sync"

// runner runs one background loop at most once and stops it.
type runner struct {
	mu      sync.Mutex
	started bool
	stopped bool
	stop    chan struct{}
	done    chan struct{}
}

// start runs loop in a goroutine unless it was started or stopped before.
func (r *runner) start(loop func(stop <-chan struct{})) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started || r.stopped {
		return
	}
	r.started = true
	r.stop = make(chan struct{})
	r.done = make(chan struct{})
	go func() {
		defer close(r.done)
		loop(r.stop)
	}()
}

// halt stops the loop and waits for it to return. It is idempotent, and a
// runner halted before it started never starts.
func (r *runner) halt() {
	r.mu.Lock()
	started, first := r.started, !r.stopped
	r.stopped = true
	if started && first {
		close(r.stop)
	}
	r.mu.Unlock()
	if started {
		<-r.done
	}
}
