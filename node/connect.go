package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3"

	"capstats/capnp/statsrpc"
	"capstats/capnp/tub"
	"capstats/wire"
)

// session is one established connection to a gatherer.
type session interface {
	// Done is closed when the connection ends, from either side.
	Done() <-chan struct{}
	// Err says why the connection ended, when a read error ended it.
	Err() error
	// Close ends the connection and waits for what the session started.
	Close() error
}

// dialFunc connects to the gatherer a furl names, offers it a provider
// whose polls are reported to l, and reports the reply to provide on
// l.provided.
type dialFunc func(ctx context.Context, f tub.Furl, l *link) (session, error)

// link is what one connection's provider reports to the connection loop:
// the reply to provide and when polls arrive, from which it learns the
// gatherer's poll interval.
type link struct {
	provided chan error    // the reply to provide; buffered, sent at most once
	polledCh chan struct{} // poked at each poll: the deadline may have moved

	mu         sync.Mutex
	lastActive time.Time // last call from the gatherer, or the connection's start
	lastPoll   time.Time
	polls      int
	gaps       [4]time.Duration // the latest gaps between polls, a ring
	ngaps      int
}

func newLink(now time.Time) *link {
	return &link{provided: make(chan error, 1), polledCh: make(chan struct{}, 1), lastActive: now}
}

// polled records a getStats call at now.
func (l *link) polled(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.polls > 0 {
		l.gaps[l.ngaps%len(l.gaps)] = now.Sub(l.lastPoll)
		l.ngaps++
	}
	l.polls++
	l.lastPoll = now
	l.lastActive = now
	select {
	case l.polledCh <- struct{}{}:
	default:
	}
}

// pinged records a ping at now: the connection is alive, but a ping says
// nothing about the poll interval.
func (l *link) pinged(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.After(l.lastActive) {
		l.lastActive = now
	}
}

// start resets the liveness clock when the connection is established.
func (l *link) start(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.After(l.lastActive) {
		l.lastActive = now
	}
}

func (l *link) active() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastActive
}

func (l *link) sawPoll() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.polls > 0
}

// deadline is when the connection is presumed dead unless a call arrives:
// three poll intervals after the last call, the interval being the longest
// of the latest gaps between polls. Until two gaps are known (the gatherer
// polls at once on provide, so the first gap can be short) it is at least
// unknown. learned reports whether two gaps were known.
func (l *link) deadline(unknown time.Duration) (dl time.Time, learned bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var maxGap time.Duration
	for i := 0; i < min(l.ngaps, len(l.gaps)); i++ {
		maxGap = max(maxGap, l.gaps[i])
	}
	if l.ngaps >= 2 {
		return l.lastActive.Add(max(minLiveness, 3*maxGap)), true
	}
	return l.lastActive.Add(max(unknown, 3*maxGap)), false
}

// providerServer answers the gatherer's calls on one connection.
type providerServer struct {
	n *Node
	l *link
}

// GetStats answers with the provider's snapshot.
func (s *providerServer) GetStats(ctx context.Context, call statsrpc.Provider_getStats) error {
	now := s.n.clock.Now()
	s.l.polled(now)
	s.n.notePoll(now)
	snap := s.n.p.Snapshot(ctx)
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	st, err := res.NewStats()
	if err != nil {
		return err
	}
	return wire.FromSnapshot(snap, st)
}

// Ping does nothing but shows the connection is alive.
func (s *providerServer) Ping(ctx context.Context, call statsrpc.Provider_ping) error {
	s.l.pinged(s.n.clock.Now())
	return nil
}

// tubSession is a real connection: a tub.Conn and the goroutine waiting
// for the reply to provide.
type tubSession struct {
	conn   *tub.Conn
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (s *tubSession) Done() <-chan struct{} { return s.conn.Done() }

func (s *tubSession) Err() error { return s.conn.Err() }

// closedErr says why a session ended.
func closedErr(s session) error {
	if err := s.Err(); err != nil {
		return fmt.Errorf("connection closed: %w", err)
	}
	return errors.New("connection closed")
}

func (s *tubSession) Close() error {
	err := s.conn.Close()
	s.cancel()
	s.wg.Wait()
	return err
}

// dialTub connects over the tub and calls provide(provider, nickname)
// without waiting for the reply.
func (n *Node) dialTub(ctx context.Context, f tub.Furl, l *link) (session, error) {
	conn, err := tub.Dial(ctx, f, n.id, capnp.Client{}, n.cfg.Tub)
	if err != nil {
		return nil, err
	}
	prov := statsrpc.Provider_ServerToClient(&providerServer{n: n, l: l})
	pctx, cancel := context.WithCancel(context.Background())
	s := &tubSession{conn: conn, cancel: cancel}
	fut, release := statsrpc.Gatherer(conn.Object()).Provide(pctx, func(p statsrpc.Gatherer_provide_Params) error {
		if err := p.SetProvider(prov); err != nil { // takes ownership of prov
			return err
		}
		return p.SetNickname(n.cfg.Nickname)
	})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_, err := fut.Struct()
		release()
		l.provided <- err
	}()
	return s, nil
}

// outcome is how a connection attempt or an established connection ended.
type outcome int

const (
	outStopped       outcome = iota // ctx done
	outTargetChanged                // a new furl, or none: go on at once
	outConnected                    // attempt: connected
	outFailed                       // could not connect, or the connection ended before it was established
	outDropped                      // an established connection ended
)

// change is what a poke of the target mailbox meant.
type change int

const (
	changeNone   change = iota
	changeTarget        // a different furl, or none
	changeKick          // the same furl, re-read on request: retry now
)

// connectLoop connects, serves, and reconnects with backoff for as long as
// ctx lives. It logs a line per change of state, not per attempt.
func (n *Node) connectLoop(ctx context.Context) {
	bo := NewBackoff(n.cfg.MaxBackoff, n.cfg.Norm)
	unknown := n.cfg.LivenessTimeout
	cur, gen := n.currentTarget()
	failing := false // the first failure of a streak has been logged

	follow := func() change {
		t, g := n.currentTarget()
		switch {
		case t == nil && cur == nil:
			return changeNone
		case t == nil || cur == nil || t.text != cur.text:
			cur, gen = t, g
			bo.Reset()
			unknown = n.cfg.LivenessTimeout
			failing = false
			return changeTarget
		case g != gen:
			gen = g
			return changeKick
		}
		return changeNone
	}

	for {
		if cur == nil {
			n.setConnected(false, "")
			select {
			case <-ctx.Done():
				return
			case <-n.targetCh:
				follow()
			}
			continue
		}
		n.startLoadMonitor()

		sess, l, out, err := n.attempt(ctx, cur, follow)
		if out == outConnected {
			n.log.Info("connected to stats gatherer", "gatherer", cur.furl.Redacted())
			failing = false
			n.setConnected(true, "")
			out, err = n.serve(ctx, sess, l, &unknown, follow)
		}
		switch out {
		case outStopped:
			return
		case outTargetChanged:
			continue
		case outDropped:
			bo.Reset()
		}
		d := bo.Next()
		n.setConnected(false, err.Error())
		retry := d.Round(time.Millisecond)
		switch {
		case out == outDropped:
			n.log.Warn("connection to stats gatherer lost; reconnecting", "error", err, "retry_in", retry)
			failing = true // the drop is this streak's one line
		case !failing:
			n.log.Warn("cannot connect to stats gatherer; will keep trying", "error", err, "retry_in", retry)
			failing = true
		default:
			n.log.Debug("cannot connect to stats gatherer", "error", err, "retry_in", retry)
		}
		if n.sleep(ctx, d, follow) == outStopped {
			return
		}
	}
}

// attempt dials cur, giving up when ctx is done or the target changes.
func (n *Node) attempt(ctx context.Context, cur *target, follow func() change) (session, *link, outcome, error) {
	dctx, cancel := context.WithTimeout(ctx, n.cfg.DialTimeout)
	defer cancel()
	l := newLink(n.clock.Now())
	type result struct {
		s   session
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := n.dial(dctx, cur.furl, l)
		ch <- result{s, err}
	}()
	abandon := func(out outcome) (session, *link, outcome, error) {
		cancel()
		if r := <-ch; r.s != nil {
			r.s.Close()
		}
		return nil, nil, out, nil
	}
	for {
		select {
		case <-ctx.Done():
			return abandon(outStopped)
		case <-n.targetCh:
			if follow() == changeTarget {
				return abandon(outTargetChanged)
			}
		case r := <-ch:
			if r.err != nil {
				if ctx.Err() != nil {
					return nil, nil, outStopped, nil
				}
				return nil, nil, outFailed, r.err
			}
			// The connection outlives dctx: tub.Dial uses its context
			// for the handshake and the fetch only.
			l.start(n.clock.Now())
			return r.s, l, outConnected, nil
		}
	}
}

// serve watches an established connection until it ends, the gatherer
// refuses the provider, no poll arrives in time, the target changes or ctx
// is done. It closes the session before returning.
func (n *Node) serve(ctx context.Context, s session, l *link, unknown *time.Duration, follow func() change) (outcome, error) {
	accepted := false // provide returned
	provided := l.provided
	dl, _ := l.deadline(*unknown)
	timer := n.clock.NewTimer(dl.Sub(n.clock.Now()))
	defer func() { timer.Stop() }()
	// end closes the session; the connection counts as established (the
	// backoff starts again from its first delay) if the gatherer accepted
	// the provider or polled it.
	end := func(err error) (outcome, error) {
		s.Close()
		if accepted || l.sawPoll() {
			return outDropped, err
		}
		return outFailed, err
	}
	for {
		select {
		case <-ctx.Done():
			s.Close()
			return outStopped, nil
		case <-s.Done():
			return end(closedErr(s))
		case err := <-provided:
			provided = nil
			if err == nil {
				accepted = true
				n.log.Debug("stats gatherer accepted this node")
				continue
			}
			select {
			case <-s.Done():
				return end(closedErr(s))
			default:
			}
			s.Close()
			return outFailed, errors.New("gatherer refused this node: " + err.Error())
		case <-l.polledCh:
			// A poll moves the deadline, later or, once the interval is
			// learned, earlier than the timer: set it again.
			dl, learned := l.deadline(*unknown)
			if learned {
				*unknown = n.cfg.LivenessTimeout
			}
			timer.Stop()
			timer = n.clock.NewTimer(dl.Sub(n.clock.Now()))
		case <-timer.C():
			dl, learned := l.deadline(*unknown)
			now := n.clock.Now()
			if now.Before(dl) {
				timer = n.clock.NewTimer(dl.Sub(now))
				continue
			}
			quiet := now.Sub(l.active()).Round(time.Millisecond)
			n.log.Warn("no poll from stats gatherer; closing the connection", "quiet_for", quiet, "interval_learned", learned)
			if !learned {
				// Perhaps the gatherer polls less often than assumed: give
				// the next connection longer to learn its interval.
				*unknown = min(2**unknown, 8*n.cfg.LivenessTimeout)
			}
			return end(errors.New("no poll for " + quiet.String()))
		case <-n.targetCh:
			if follow() == changeTarget {
				s.Close()
				return outTargetChanged, nil
			}
		}
	}
}

// sleep waits d unless ctx ends or the target changes or is kicked.
func (n *Node) sleep(ctx context.Context, d time.Duration, follow func() change) outcome {
	t := n.clock.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return outStopped
		case <-t.C():
			return outFailed
		case <-n.targetCh:
			if follow() != changeNone {
				return outTargetChanged
			}
		}
	}
}

func (n *Node) setConnected(connected bool, lastErr string) {
	n.stateMu.Lock()
	defer n.stateMu.Unlock()
	if n.state.Connected != connected || n.state.Since.IsZero() {
		n.state.Since = n.clock.Now()
	}
	n.state.Connected = connected
	if lastErr != "" {
		n.state.LastError = lastErr
	}
}

func (n *Node) notePoll(now time.Time) {
	n.stateMu.Lock()
	defer n.stateMu.Unlock()
	n.state.LastPoll = now
}

// startLoadMonitor starts the load monitor the first time a gatherer is
// configured, as the original ran it only for a gatherer.
func (n *Node) startLoadMonitor() {
	if n.loadMon != nil {
		return
	}
	n.loadMon = NewLoadMonitor(n.clock, n.log)
	if err := n.p.Register(n.loadMon); err != nil {
		n.log.Error("cannot register the load monitor", "error", err)
		return
	}
	n.loadMon.Start()
}
