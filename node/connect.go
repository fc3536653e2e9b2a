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
	"capstats/stats"
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
	snap := s.n.cutReply(s.n.p.Snapshot(ctx))
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

// cutReply keeps snap within the entries the gatherer accepts, saying so
// when cutting starts and when it ends.
func (n *Node) cutReply(snap stats.Snapshot) stats.Snapshot {
	before := n.entries.dropped.Load()
	snap, dropped := n.entries.apply(snap)
	switch {
	case dropped > 0 && before == 0:
		n.log.Warn("more stats than the gatherer accepts; the reply is cut", "max_entries", n.entries.max, "dropped", dropped)
	case dropped == 0 && before > 0:
		n.log.Info("stats fit the gatherer's limit again", "max_entries", n.entries.max)
	}
	return snap
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
	conn, err := tub.Dial(ctx, f, n.id, capnp.Client{}, n.topts)
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

// connectLoop keeps a Reconnector on the configured furl for as long as
// ctx lives, replacing it when the furl changes.
func (n *Node) connectLoop(ctx context.Context) {
	cur, gen := n.currentTarget()
	for {
		if cur == nil {
			n.setConnected(false, "")
			select {
			case <-ctx.Done():
				return
			case <-n.targetCh:
				cur, gen = n.currentTarget()
			}
			continue
		}
		n.startLoadMonitor()

		tctx, cancel := context.WithCancel(ctx)
		rl := &retryLog{n: n}
		r := tub.NewReconnector(n.attempter(cur), tub.ReconnectOptions{
			Backoff: tub.Backoff{Max: n.cfg.MaxBackoff, Jitter: n.jitter},
			OnRetry: rl.report,
			Clock:   n.clock,
		})
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.Run(tctx)
		}()
	watch:
		for {
			select {
			case <-ctx.Done():
				cancel()
				<-done
				return
			case <-n.targetCh:
				t, g := n.currentTarget()
				switch {
				case t == nil || t.text != cur.text:
					cur, gen = t, g
					break watch
				case g != gen:
					// The same furl, re-read on request: retry now if
					// waiting.
					gen = g
					r.RetryNow()
				}
			}
		}
		cancel()
		<-done
	}
}

// attempter returns the Reconnector's attempt for cur: dial, then serve
// the connection until it ends. How long the gatherer may stay silent
// before it has shown its poll interval carries over from one connection
// to the next.
func (n *Node) attempter(cur *target) tub.Attempt {
	unknown := n.cfg.LivenessTimeout
	return func(ctx context.Context) (bool, error) {
		sess, l, err := n.attempt(ctx, cur)
		if err != nil {
			return false, err
		}
		n.log.Info("connected to stats gatherer", "gatherer", cur.furl.Redacted())
		n.setConnected(true, "")
		return n.serve(ctx, sess, l, &unknown)
	}
}

// attempt dials cur within the dial timeout.
func (n *Node) attempt(ctx context.Context, cur *target) (session, *link, error) {
	dctx, cancel := context.WithTimeout(ctx, n.cfg.DialTimeout)
	defer cancel()
	l := newLink(n.clock.Now())
	s, err := n.dial(dctx, cur.furl, l)
	if err != nil {
		return nil, nil, err
	}
	if err := ctx.Err(); err != nil {
		s.Close()
		return nil, nil, err
	}
	// The connection outlives dctx: tub.Dial uses its context for the
	// handshake and the fetch only.
	l.start(n.clock.Now())
	return s, l, nil
}

// serve watches an established connection until it ends, the gatherer
// refuses the provider, no poll arrives in time or ctx is done. It closes
// the session before returning, and reports whether the connection counts
// as established (the backoff starts again from its first delay): the
// gatherer accepted the provider or polled it.
func (n *Node) serve(ctx context.Context, s session, l *link, unknown *time.Duration) (bool, error) {
	accepted := false // provide returned
	provided := l.provided
	dl, _ := l.deadline(*unknown)
	timer := n.clock.NewTimer(dl.Sub(n.clock.Now()))
	defer func() { timer.Stop() }()
	end := func(err error) (bool, error) {
		s.Close()
		return accepted || l.sawPoll(), err
	}
	for {
		select {
		case <-ctx.Done():
			s.Close()
			return false, ctx.Err()
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
			return false, errors.New("gatherer refused this node: " + err.Error())
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
		}
	}
}

// reportAfter are the intervals, from the first failure of a streak,
// between the lines that say the node still cannot connect; the last
// repeats. Each is at most the backoff cap, so that the log is never silent
// for longer than the longest wait.
var reportAfter = []time.Duration{time.Minute, 10 * time.Minute, time.Hour}

// retryLog logs a Reconnector's retries: a drop, the first failure of a
// streak with its reason, then a line at growing intervals with the count
// and the latest reason; the other failures are debug lines.
type retryLog struct {
	n     *Node
	since time.Time // the streak's first failure
	next  time.Time // when the next "still cannot connect" line is due
	step  int
}

func (rl *retryLog) interval(step int) time.Duration {
	return min(reportAfter[min(step, len(reportAfter)-1)], rl.n.cfg.MaxBackoff)
}

func (rl *retryLog) report(r tub.Retry) {
	n := rl.n
	n.setConnected(false, r.Err.Error())
	retry := r.Delay.Round(time.Millisecond)
	now := n.clock.Now()
	switch {
	case r.Established:
		n.log.Warn("connection to stats gatherer lost; reconnecting", "err", r.Err, "retry_in", retry)
	case r.Failures == 1:
		n.log.Warn("cannot connect to stats gatherer; will keep trying", "err", r.Err, "retry_in", retry)
		rl.since, rl.step = now, 0
		rl.next = now.Add(rl.interval(0))
	case !now.Before(rl.next):
		n.log.Warn("still cannot connect to stats gatherer", "failures", r.Failures,
			"failing_for", now.Sub(rl.since).Round(time.Second), "err", r.Err, "retry_in", retry)
		rl.step++
		rl.next = now.Add(rl.interval(rl.step))
	default:
		n.log.Debug("cannot connect to stats gatherer", "failures", r.Failures, "err", r.Err, "retry_in", retry)
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

// startLoadMonitor starts the load monitor, if Config.LoadMonitor asks for
// it, the first time a gatherer is configured, as the original ran it only
// for a gatherer.
func (n *Node) startLoadMonitor() {
	if !n.cfg.LoadMonitor || n.loadMon != nil {
		return
	}
	n.loadMon = newLoadMonitor(n.clock, n.log)
	n.p.Register(n.loadMon) // never nil
	n.loadMon.Start()
}
