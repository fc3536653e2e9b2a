package tub

import (
	"container/list"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// Reasons a listener refuses or drops a connection: the reason label of
// capstats_tub_refusals in the gatherer's /metrics, and the "reason" of the
// warning logged.
const (
	ReasonMaxConns         = "max_conns"          // MaxConns reached
	ReasonDescriptors      = "descriptors"        // FDReserve reached under RLIMIT_NOFILE
	ReasonMaxConnsPerAddr  = "max_conns_per_addr" // MaxConnsPerAddr reached
	ReasonPendingDropped   = "pending_dropped"    // oldest pending handshake dropped for a newer one
	ReasonHandshakeTimeout = "handshake_timeout"  // waited or handshook longer than HandshakeTimeout
	ReasonHandshakeFailed  = "handshake_failed"   // TLS refused (no certificate, TLS 1.2, garbage)
	ReasonFetchTimeout     = "fetch_timeout"      // no object fetched within FetchTimeout
	ReasonUnknownSwissnum  = "unknown_swissnum"   // fetch named no object
	ReasonCallsInFlight    = "calls_in_flight"    // MaxCallsInFlight exceeded
	ReasonHeldBytes        = "held_bytes"         // MaxHeldBytes exceeded
	ReasonSendBacklog      = "send_backlog"       // peer stopped reading what it is sent
	ReasonMessageSize      = "message_size"       // a message over MaxMessageSize (PreAuthMessageSize before a fetch)
	ReasonMessageTimeout   = "message_timeout"    // a message begun and not finished within MessageTimeout
	ReasonMessageStalled   = "message_stalled"    // a message arriving for a quarter of MessageTimeout while others waited for room
)

// reasons is every reason, in the order Metrics.Refusals lists them.
var reasons = [...]string{
	ReasonMaxConns, ReasonDescriptors, ReasonMaxConnsPerAddr, ReasonPendingDropped,
	ReasonHandshakeTimeout, ReasonHandshakeFailed, ReasonFetchTimeout, ReasonUnknownSwissnum,
	ReasonCallsInFlight, ReasonHeldBytes, ReasonSendBacklog, ReasonMessageSize, ReasonMessageTimeout,
	ReasonMessageStalled,
}

func reasonIndex(r string) int {
	for i, x := range reasons {
		if x == r {
			return i
		}
	}
	panic("tub: unknown reason " + r)
}

// Metrics is a snapshot of a listener's connections and of what it has
// refused since it started.
type Metrics struct {
	// Connections is how many connections are established now.
	Connections int64
	// Pending is how many accepted connections have not finished their
	// TLS handshake (waiting for a slot or handshaking).
	Pending int64
	// MaxConns is the bound on connections in force: MaxConns, or lower to
	// keep FDReserve descriptors free.
	MaxConns int64
	// UnknownSwissnums counts fetches that named no object.
	UnknownSwissnums int64
	// BufferedBytes is what incoming messages hold of MaxBufferedBytes now,
	// over all connections.
	BufferedBytes int64
	// MaxBufferedBytes is the bound in force (Options.MaxBufferedBytes).
	MaxBufferedBytes int64
	// BufferWaits counts messages whose connection stopped being read
	// until there was room for them under MaxBufferedBytes, and
	// BufferWaitTime is the time they waited in total.
	BufferWaits    int64
	BufferWaitTime time.Duration
	refused        [len(reasons)]int64
}

// Refusal is how many connections were refused or dropped for one reason.
type Refusal struct {
	Reason string
	Count  int64
}

// Refusals lists every reason with its count, zero or not, in a fixed order.
func (m Metrics) Refusals() []Refusal {
	out := make([]Refusal, len(reasons))
	for i, r := range reasons {
		out[i] = Refusal{Reason: r, Count: m.refused[i]}
	}
	return out
}

// Refused returns the count for one of the Reason constants.
func (m Metrics) Refused(reason string) int64 { return m.refused[reasonIndex(reason)] }

// Metrics returns a snapshot of the listener's figures.
func (l *Listener) Metrics() Metrics {
	l.gate.mu.Lock()
	m := Metrics{
		Connections: int64(l.gate.total - l.gate.all.Len()),
		Pending:     int64(l.gate.all.Len()),
		MaxConns:    int64(l.gate.maxConns),
	}
	l.gate.mu.Unlock()
	m.UnknownSwissnums = l.guesses.Load()
	m.BufferedBytes = l.budget.used.Load()
	m.MaxBufferedBytes = l.budget.max
	m.BufferWaits = l.budget.waits.Load()
	m.BufferWaitTime = time.Duration(l.budget.waited.Load())
	for i := range reasons {
		m.refused[i] = l.refused[i].Load()
	}
	return m
}

// refuse counts a refusal and warns about it, at most once every ten
// seconds per reason, so that an attacker cannot flood the log.
func (l *Listener) refuse(reason string, remote net.Addr, args ...any) {
	i := reasonIndex(reason)
	n := l.refused[i].Add(1)
	now := time.Now().UnixNano()
	last := l.lastRefusal[i].Load()
	if now-last < int64(10*time.Second) || !l.lastRefusal[i].CompareAndSwap(last, now) {
		return
	}
	attrs := append([]any{"reason", reason, "total", n}, args...)
	if remote != nil {
		attrs = append(attrs, "remote", remote.String())
	}
	l.opts.logger().Warn("tub refused a connection", attrs...)
}

// gate admits accepted connections to the TLS handshake: it bounds
// connections in total and per source address, and runs at most
// MaxHandshakes handshakes at once (MaxHandshakesPerAddr from one address),
// oldest waiting connection first.
type gate struct {
	mu         sync.Mutex
	all        list.List // of *pending, oldest first
	addrs      map[netip.Addr]*addrState
	total      int // connections holding a descriptor: pending and established
	handshakes int
	closed     bool

	maxConns, maxConnsPerAddr     int
	maxPending, maxPendingPerAddr int
	maxHandshakes, maxPerAddr     int
	fdLimited                     bool // maxConns is what the descriptor reserve leaves
}

type addrState struct {
	pending    list.List // of *pending, oldest first
	handshakes int
	conns      int                 // pending and established
	share      *semaphore.Weighted // of the listener's byteBudget, made by the first connection to need it
}

// pending is an accepted connection before the end of its handshake.
type pending struct {
	raw     net.Conn
	addr    netip.Addr
	elem    *list.Element // in gate.all
	aelem   *list.Element // in addrState.pending
	wake    chan struct{} // closed when started or dropped
	started bool
	dropped bool
}

func newGate(o Options, soft uint64) *gate {
	g := &gate{
		addrs:             make(map[netip.Addr]*addrState),
		maxConns:          o.maxConns(),
		maxConnsPerAddr:   o.maxConnsPerAddr(),
		maxPending:        o.maxPending(),
		maxPendingPerAddr: o.maxPendingPerAddr(),
		maxHandshakes:     o.maxHandshakes(),
		maxPerAddr:        o.maxHandshakesPerAddr(),
	}
	if soft > 0 {
		if fd := int(min(soft, 1<<30)) - o.fdReserve(soft); fd < g.maxConns {
			g.maxConns = max(fd, 1)
			g.fdLimited = true
		}
	}
	return g
}

func addrOf(a net.Addr) netip.Addr {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// admit takes a newly accepted connection in, or returns why not. When
// pending connections are at their bound, the oldest (of the same address
// first) is dropped and returned in dropped, to be counted by the caller.
func (g *gate) admit(raw net.Conn) (p *pending, dropped *pending, refused string) {
	addr := addrOf(raw.RemoteAddr())
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, nil, ReasonMaxConns
	}
	if g.total >= g.maxConns {
		if g.fdLimited {
			return nil, nil, ReasonDescriptors
		}
		return nil, nil, ReasonMaxConns
	}
	a := g.addrs[addr]
	if a == nil {
		a = &addrState{}
		g.addrs[addr] = a
	}
	if a.conns >= g.maxConnsPerAddr {
		return nil, nil, ReasonMaxConnsPerAddr
	}
	switch {
	case a.pending.Len() >= g.maxPendingPerAddr:
		dropped = a.pending.Front().Value.(*pending)
	case g.all.Len() >= g.maxPending:
		dropped = g.all.Front().Value.(*pending)
	}
	if dropped != nil {
		g.drop(dropped)
	}
	p = &pending{raw: raw, addr: addr, wake: make(chan struct{})}
	p.elem = g.all.PushBack(p)
	p.aelem = a.pending.PushBack(p)
	a.conns++
	g.total++
	g.startWaiting()
	return p, dropped, ""
}

// drop closes a pending connection and frees its place; its goroutine
// wakes and finds it dropped. g.mu is held.
func (g *gate) drop(p *pending) {
	g.remove(p)
	p.dropped = true
	g.release(p.addr)
	p.raw.Close()
	if !p.started {
		close(p.wake)
	}
}

// remove takes p off the pending lists and gives back its handshake slot.
// g.mu is held.
func (g *gate) remove(p *pending) {
	a := g.addrs[p.addr]
	g.all.Remove(p.elem)
	a.pending.Remove(p.aelem)
	if p.started {
		g.handshakes--
		a.handshakes--
	}
}

// release gives back a connection's descriptor. g.mu is held.
func (g *gate) release(addr netip.Addr) {
	g.total--
	a := g.addrs[addr]
	if a.conns--; a.conns == 0 {
		delete(g.addrs, addr)
	}
}

// startWaiting starts the oldest waiting connections that have a slot.
// g.mu is held.
func (g *gate) startWaiting() {
	for e := g.all.Front(); e != nil && g.handshakes < g.maxHandshakes; e = e.Next() {
		p := e.Value.(*pending)
		a := g.addrs[p.addr]
		if p.started || a.handshakes >= g.maxPerAddr {
			continue
		}
		p.started = true
		g.handshakes++
		a.handshakes++
		close(p.wake)
	}
}

// wait blocks until p may handshake. It returns false when p was dropped
// or waited until deadline, and then p no longer counts.
func (g *gate) wait(p *pending, deadline time.Time) (ok, timedOut bool) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-p.wake:
	case <-t.C:
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case p.dropped:
		return false, false
	case p.started:
		return true, false
	}
	g.remove(p)
	g.release(p.addr)
	p.dropped = true
	p.raw.Close()
	return false, true
}

// done ends p's handshake: it stays counted as a connection if it
// succeeded, and otherwise no longer counts. It reports false if p was
// dropped meanwhile (and then p's connection is closed).
func (g *gate) done(p *pending, ok bool) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if p.dropped {
		return false
	}
	g.remove(p)
	if !ok {
		g.release(p.addr)
	}
	g.startWaiting()
	return true
}

// addrShare returns the part of b that addr's connections share. The
// caller's connection from addr is counted, so its state is there.
func (g *gate) addrShare(addr netip.Addr, b *byteBudget) *semaphore.Weighted {
	g.mu.Lock()
	defer g.mu.Unlock()
	a := g.addrs[addr]
	if a == nil { // closed meanwhile: nothing it reads will matter
		return b.newAddrShare()
	}
	if a.share == nil {
		a.share = b.newAddrShare()
	}
	return a.share
}

// closeConn gives back an established connection's place.
func (g *gate) closeConn(addr netip.Addr) {
	g.mu.Lock()
	g.release(addr)
	g.mu.Unlock()
}

// close refuses from now on and drops every pending connection.
func (g *gate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	for g.all.Len() > 0 {
		g.drop(g.all.Front().Value.(*pending))
	}
}

// counters are a listener's refusal counts and when each was last logged.
type counters = [len(reasons)]atomic.Int64
