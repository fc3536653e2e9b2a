package tub

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/rpc"

	"capstats/capnp/tubrpc"
)

type (
	tubClient      = tubrpc.Tub
	tubFetchParams = tubrpc.Tub_fetch_Params
)

// Peer is the authenticated far end of an incoming connection. The methods
// of an exported object find it with PeerFromContext.
type Peer struct {
	// TubID is taken from the peer's certificate, never from what it says.
	TubID      string
	RemoteAddr net.Addr

	nc      net.Conn
	raw     net.Conn // under nc: closing it ends the connection without a TLS alert to write
	codec   *codec
	ctx     context.Context // canceled when the connection has ended
	cancel  context.CancelFunc
	fetched atomic.Bool
}

// Err says why the connection ended, when it ended on a read error such as
// a message over the size limit; nil otherwise.
func (p *Peer) Err() error { return readErr(p.codec) }

// readErr is the codec's read error unless it is an ordinary close.
func readErr(c *codec) error {
	err := c.err()
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Close ends the connection to the peer, for instance when it has stopped
// answering and no FIN will ever arrive.
func (p *Peer) Close() error { return p.nc.Close() }

// Done is closed when the connection to the peer has ended.
func (p *Peer) Done() <-chan struct{} { return p.ctx.Done() }

// AfterClose arranges for f to run in its own goroutine once the connection
// to the peer has ended, without a goroutine waiting for it meanwhile.
func (p *Peer) AfterClose(f func()) { context.AfterFunc(p.ctx, f) }

type peerKey struct{}

// PeerFromContext returns the peer whose call is being served.
func PeerFromContext(ctx context.Context) (*Peer, bool) {
	p, ok := ctx.Value(peerKey{}).(*Peer)
	return p, ok
}

// Listener accepts mutual-TLS connections and serves each one a Tub
// bootstrap object that restores registered capabilities by swiss number.
type Listener struct {
	ln   net.Listener
	id   *Identity
	opts Options

	mu       sync.RWMutex
	exported map[[32]byte]export
	conns    map[*rpc.Conn]*Peer
	closed   bool

	tlsConf     *tls.Config
	boot        tubrpc.Tub // one restorer for every connection
	gate        *gate
	budget      *byteBudget
	stop        chan struct{} // closed by Close
	wg          sync.WaitGroup
	guesses     atomic.Int64
	lastWarn    atomic.Int64
	refused     counters
	lastRefusal counters
}

type export struct {
	swissnum string
	client   capnp.Client
}

// Listen starts accepting connections on addr (host:port).
func Listen(addr string, id *Identity, opts Options) (*Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	l := &Listener{
		ln:       ln,
		id:       id,
		opts:     opts,
		exported: make(map[[32]byte]export),
		conns:    make(map[*rpc.Conn]*Peer),
		stop:     make(chan struct{}),
		gate:     newGate(opts, softFileLimit()),
		budget:   newByteBudget(opts.maxBufferedBytes(), opts.maxBufferedBytesPerAddr()),
	}
	l.tlsConf = l.serverTLS()
	l.boot = tubrpc.Tub_ServerToClient(&restorer{l: l})
	l.wg.Add(2)
	go l.acceptLoop()
	go l.sweep()
	return l, nil
}

// Addr returns the address the listener accepts on.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Port returns the TCP port the listener accepts on.
func (l *Listener) Port() int { return l.ln.Addr().(*net.TCPAddr).Port }

// TubID returns the listener's own tub ID.
func (l *Listener) TubID() string { return l.id.TubID() }

// Register exports c under a fresh swiss number and returns its furl with
// the listener's own address as hint. The listener takes ownership of c.
func (l *Listener) Register(c capnp.Client) Furl {
	f, _ := l.RegisterAs(NewSwissnum(), c)
	return f
}

// RegisterAs exports c under a known swiss number, so that a furl saved
// earlier stays valid across restarts.
func (l *Listener) RegisterAs(swissnum string, c capnp.Client) (Furl, error) {
	if !ValidSwissnum(swissnum) {
		c.Release()
		return Furl{}, errors.New("swiss number must be 32 lowercase base32 characters")
	}
	l.mu.Lock()
	l.exported[sha256.Sum256([]byte(swissnum))] = export{swissnum: swissnum, client: c}
	l.mu.Unlock()
	return l.FurlFor(swissnum), nil
}

// Unregister withdraws the export under swissnum, so that fetches of it
// are refused from then on (a furl is rotated this way). Connections that
// fetched it earlier keep what they hold: ending those is the exporter's
// call. It reports whether swissnum was exported.
func (l *Listener) Unregister(swissnum string) bool {
	key := sha256.Sum256([]byte(swissnum))
	l.mu.Lock()
	e, ok := l.exported[key]
	if ok {
		delete(l.exported, key)
	}
	l.mu.Unlock()
	if ok {
		e.client.Release()
	}
	return ok
}

// FurlFor returns the furl of swissnum with this listener's address as hint.
func (l *Listener) FurlFor(swissnum string) Furl {
	return Furl{TubID: l.id.TubID(), Hints: []string{l.ln.Addr().String()}, Swissnum: swissnum}
}

// lookup finds an export in time that does not depend on how much of a
// guess is right: the map is keyed by a hash the guesser cannot steer, and
// the final comparison is constant-time.
func (l *Listener) lookup(swissnum string) (capnp.Client, bool) {
	l.mu.RLock()
	e, ok := l.exported[sha256.Sum256([]byte(swissnum))]
	l.mu.RUnlock()
	if !ok || subtle.ConstantTimeCompare([]byte(e.swissnum), []byte(swissnum)) != 1 {
		return capnp.Client{}, false
	}
	return e.client, true
}

// Close stops accepting, ends every connection and releases the exports.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.stop)
	err := l.ln.Close()
	conns := make([]*rpc.Conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	exports := l.exported
	l.exported = map[[32]byte]export{}
	l.mu.Unlock()
	l.gate.close()
	for _, c := range conns {
		c.Close()
	}
	l.wg.Wait()
	l.boot.Release()
	for _, e := range exports {
		e.client.Release()
	}
	return err
}

// acceptLoop accepts at once and leaves the handshake to the gate: a
// socket that never speaks must not keep the next one from being accepted.
func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	log := l.opts.logger()
	var delay time.Duration
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, don't spin.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			log.Warn("accept failed", "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		p, dropped, refused := l.gate.admit(nc)
		if dropped != nil {
			l.refuse(ReasonPendingDropped, dropped.raw.RemoteAddr())
		}
		if refused != "" {
			l.refuse(refused, nc.RemoteAddr())
			nc.Close()
			continue
		}
		l.wg.Add(1)
		go l.serve(p)
	}
}

func (l *Listener) serverTLS() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{l.id.tlsCertificate()},
		// Any certificate will do: the peer is identified by the hash of
		// its key, which the TLS 1.3 handshake proves it holds.
		ClientAuth: tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := peerTubID(raw)
			return err
		},
	}
}

// serve waits for a handshake slot, does the handshake and starts the RPC
// connection; the wait group is done when the connection ends (or fails to
// start).
func (l *Listener) serve(p *pending) {
	log := l.opts.logger()
	raw := p.raw
	timeout := l.opts.handshakeTimeout()
	if ok, timedOut := l.gate.wait(p, time.Now().Add(timeout)); !ok {
		if timedOut {
			l.refuse(ReasonHandshakeTimeout, raw.RemoteAddr(), "stage", "waiting")
		}
		l.wg.Done()
		return
	}
	// Whoever closes the connection ends its reader's wait for the budget.
	readCtx, stopReading := context.WithCancel(context.Background())
	raw = &closeNotifier{Conn: raw, closed: stopReading}
	tc := tls.Server(raw, l.tlsConf)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	err := tc.HandshakeContext(ctx)
	timedOut := ctx.Err() != nil
	cancel()
	if !l.gate.done(p, err == nil) {
		// Dropped for a newer connection while handshaking: counted then.
		raw.Close()
		l.wg.Done()
		return
	}
	if err != nil {
		raw.Close()
		if timedOut {
			l.refuse(ReasonHandshakeTimeout, raw.RemoteAddr(), "stage", "handshake")
		} else {
			l.refuse(ReasonHandshakeFailed, raw.RemoteAddr(), "err", err)
		}
		l.wg.Done()
		return
	}
	peer := &Peer{
		TubID:      TubIDOf(tc.ConnectionState().PeerCertificates[0]),
		RemoteAddr: raw.RemoteAddr(),
		nc:         tc,
		raw:        raw,
		codec:      newCodec(tc, l.opts.preAuthMessageSize()),
	}
	peer.codec.budget, peer.codec.readCtx = l.budget, readCtx
	peer.codec.share = l.gate.addrShare(p.addr, l.budget)
	peer.ctx, peer.cancel = context.WithCancel(context.Background())
	peerCtx := context.WithValue(context.Background(), peerKey{}, peer)
	// A peer that has not fetched an object by now is not a node.
	fetchTimer := time.AfterFunc(l.opts.fetchTimeout(), func() {
		if !peer.fetched.Load() {
			l.refuse(ReasonFetchTimeout, peer.RemoteAddr, "peer", peer.TubID)
			raw.Close()
		}
	})
	var conn *rpc.Conn
	// No goroutine waits for the connection to end: the RPC connection
	// closes its transport last thing, and that cleans up.
	peer.codec.onClose = func() {
		fetchTimer.Stop()
		raw.Close()
		l.mu.Lock()
		delete(l.conns, conn)
		l.mu.Unlock()
		l.gate.closeConn(p.addr)
		peer.cancel()
		l.wg.Done()
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		fetchTimer.Stop()
		raw.Close()
		l.gate.closeConn(p.addr)
		peer.cancel()
		l.wg.Done()
		return
	}
	maxCalls := l.opts.maxCallsInFlight()
	tr := &guardTransport{
		Transport: newTransport(peer.codec),
		cd:        peer.codec,
		maxCalls:  maxCalls,
		maxHeld:   int64(l.opts.maxHeldBytes()),
		maxOut:    int64(16 * maxCalls),
		exceeded: func(reason string, err error) {
			l.refuse(reason, peer.RemoteAddr, "peer", peer.TubID)
			raw.Close()
		},
	}
	conn = rpc.NewConn(tr, &rpc.Options{
		BootstrapClient: capnp.Client(l.boot).AddRef(),
		Logger:          rpcLogger{log},
		BaseContext:     func() context.Context { return peerCtx },
	})
	l.conns[conn] = peer
	l.mu.Unlock()
	log.Debug("connection", "peer", peer.TubID, "remote", peer.RemoteAddr.String())
}

// sweep closes, every so often, the connections whose message has been
// arriving longer than MessageTimeout, and while messages wait for room in
// the budget, those whose message has been arriving longer than a quarter
// of it: a stalled body holds its size of the budget, and the nodes
// waiting behind it should not wait out the whole timeout.
func (l *Listener) sweep() {
	defer l.wg.Done()
	timeout := int64(l.opts.messageTimeout())
	grace := timeout / 4
	tick := time.NewTicker(time.Duration(min(int64(time.Second), grace)))
	defer tick.Stop()
	type late struct {
		peer   *Peer
		reason string
	}
	var doomed []late
	for {
		select {
		case <-l.stop:
			return
		case <-tick.C:
		}
		now, pressed := l.budget.now(), l.budget.waiting.Load() > 0
		l.mu.RLock()
		for _, p := range l.conns {
			since := p.codec.reading.Load()
			switch {
			case since == 0:
			case now-since > timeout:
				doomed = append(doomed, late{p, ReasonMessageTimeout})
			case pressed && now-since > grace && p.codec.taken.Load() > 0:
				doomed = append(doomed, late{p, ReasonMessageStalled})
			}
		}
		l.mu.RUnlock()
		for _, c := range doomed {
			l.refuse(c.reason, c.peer.RemoteAddr, "peer", c.peer.TubID)
			c.peer.raw.Close()
		}
		doomed = doomed[:0]
	}
}

// closeNotifier is a connection that says when it is closed, whoever
// closes it.
type closeNotifier struct {
	net.Conn
	closed context.CancelFunc
}

func (c *closeNotifier) Close() error {
	c.closed()
	return c.Conn.Close()
}

// restorer is the bootstrap object of every connection; the peer calling
// it is in the call's context.
type restorer struct {
	l *Listener
}

// unknownSwissnumGrace is how long a connection that fetched an unknown
// swiss number stays open for the answer to reach the peer.
const unknownSwissnumGrace = 200 * time.Millisecond

// ErrUnknownSwissnum is what a caller of fetch sees for a swiss number that
// names nothing. It does not repeat the number.
var ErrUnknownSwissnum = errors.New("no object with that swiss number")

func (r *restorer) Fetch(ctx context.Context, call tubrpc.Tub_fetch) error {
	swiss, err := call.Args().Swissnum()
	if err != nil {
		return err
	}
	peer, _ := PeerFromContext(ctx)
	c, ok := r.l.lookup(swiss)
	if !ok {
		r.l.noteGuess(peer)
		if peer != nil {
			// A node has the furl; a guesser gets one answer and the door.
			// The short delay lets the answer go out first.
			// noteGuess has logged it.
			r.l.refused[reasonIndex(ReasonUnknownSwissnum)].Add(1)
			time.AfterFunc(unknownSwissnumGrace, func() { peer.raw.Close() })
		}
		return ErrUnknownSwissnum
	}
	if peer != nil && !peer.fetched.Swap(true) {
		peer.codec.limit.Store(r.l.opts.maxMessageSize())
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetObject(c.AddRef())
}

// noteGuess logs unknown swiss numbers at most once every ten seconds, so a
// guesser cannot flood the log.
func (l *Listener) noteGuess(p *Peer) {
	n := l.guesses.Add(1)
	now := time.Now().UnixNano()
	last := l.lastWarn.Load()
	if now-last < int64(10*time.Second) || !l.lastWarn.CompareAndSwap(last, now) {
		return
	}
	if p == nil {
		l.opts.logger().Warn("fetch with an unknown swiss number", "unknown_total", n)
		return
	}
	l.opts.logger().Warn("fetch with an unknown swiss number", "peer", p.TubID, "remote", p.RemoteAddr.String(), "unknown_total", n)
}

// UnknownSwissnums counts fetches that named no object.
func (l *Listener) UnknownSwissnums() int64 { return l.guesses.Load() }
