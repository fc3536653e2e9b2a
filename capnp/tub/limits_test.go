package tub

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/rpc"

	"capstats/capnp/statsrpc"
)

// dialFrom opens a TCP connection to l from the loopback address src
// (127.0.0.2 and so on: all of 127/8 is loopback on Linux), so that a test
// can play several source addresses.
func dialFrom(t testing.TB, l *Listener, src string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	nc, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// closedByServer reports whether the server closed nc within bound (a
// give-up bound, not a speed requirement).
func closedByServer(nc net.Conn, bound time.Duration) bool {
	nc.SetReadDeadline(time.Now().Add(bound))
	_, err := io.Copy(io.Discard, nc)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// waitUntil polls cond until it holds or the bound passes.
func waitUntil(t testing.TB, what string, bound time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s", bound, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Silent sockets from one address hold only that address's handshake
// slots: a node from another address gets in while they are all still
// open. (Before, the listener's 64 slots were taken before Accept, and a
// node queued behind the silent sockets until their handshakes timed out.)
func TestSilentSocketsDoNotKeepOthersOut(t *testing.T) {
	l, p, f := listen(t, Options{MaxHandshakes: 8, MaxHandshakesPerAddr: 4, HandshakeTimeout: time.Minute})
	for range 40 {
		dialFrom(t, l, "127.0.0.2") // held open until the test ends
	}
	waitUntil(t, "the silent sockets to be accepted", 20*time.Second, func() bool { return l.Metrics().Pending == 40 })
	// The bound is far under the silent sockets' minute: getting in at all
	// means getting in past them.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := Dial(ctx, f, newID(t), capnp.Client{}, Options{})
	if err != nil {
		t.Fatalf("a node could not connect past 40 silent sockets: %v", err)
	}
	defer conn.Close()
	if err := ping(ctx, conn.Object()); err != nil {
		t.Fatal(err)
	}
	if len(p.callers) != 1 {
		t.Errorf("%d pings served, want 1", len(p.callers))
	}
	if m := l.Metrics(); m.Pending != 40 {
		t.Errorf("pending = %d, want the 40 silent sockets still waiting", m.Pending)
	}
}

// Many nodes from one address (one NAT) all get in, although only a few of
// their handshakes run at once.
func TestManyNodesFromOneAddressGetIn(t *testing.T) {
	l, _, f := listen(t, Options{MaxHandshakes: 4, MaxHandshakesPerAddr: 2})
	const n = 60
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := Dial(ctx, f, newID(t), capnp.Client{}, Options{})
			if err != nil {
				errs <- err
				return
			}
			errs <- ping(ctx, conn.Object())
			conn.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	m := l.Metrics()
	for _, r := range m.Refusals() {
		if r.Count != 0 {
			t.Errorf("%s: %d refusals of honest nodes", r.Reason, r.Count)
		}
	}
}

// When pending connections are at their bound, the oldest is dropped for
// the newcomer, and the drop is counted and logged once.
func TestOldestPendingDroppedWhenFull(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	l, _, _ := listen(t, Options{Logger: logger, MaxPending: 4, MaxPendingPerAddr: 4, MaxHandshakes: 2, HandshakeTimeout: time.Minute})
	var socks []net.Conn
	for range 4 {
		socks = append(socks, dialFrom(t, l, "127.0.0.1"))
		waitUntil(t, "accept", 10*time.Second, func() bool { return l.Metrics().Pending == int64(len(socks)) })
	}
	for i := range 3 {
		dialFrom(t, l, "127.0.0.3")
		if !closedByServer(socks[i], 10*time.Second) {
			t.Fatalf("pending connection %d (the oldest) still open after a newer one came", i)
		}
	}
	// The count follows the close.
	waitUntil(t, "3 drops counted, 4 pending", 10*time.Second, func() bool {
		m := l.Metrics()
		return m.Refused(ReasonPendingDropped) == 3 && m.Pending == 4
	})
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logs.String(), "reason=pending_dropped"); n != 1 {
		t.Errorf("%d warnings for 3 drops, want 1 (rate-limited):\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "level=WARN") {
		t.Error("the drop is not logged at warn")
	}
}

// One address's oldest pending connection goes first when that address is
// at its own bound, even though the listener has room.
func TestPendingPerAddrDropsThatAddressFirst(t *testing.T) {
	l, _, _ := listen(t, Options{MaxPending: 100, MaxPendingPerAddr: 3, MaxHandshakes: 1, HandshakeTimeout: time.Minute})
	other := dialFrom(t, l, "127.0.0.4")
	waitUntil(t, "accept", 10*time.Second, func() bool { return l.Metrics().Pending == 1 })
	var socks []net.Conn
	for range 3 {
		socks = append(socks, dialFrom(t, l, "127.0.0.5"))
	}
	waitUntil(t, "accept", 10*time.Second, func() bool { return l.Metrics().Pending == 4 })
	dialFrom(t, l, "127.0.0.5")
	if !closedByServer(socks[0], 10*time.Second) {
		t.Fatal("the address's oldest pending connection is still open")
	}
	other.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := other.Read(make([]byte, 1)); !isTimeout(err) {
		t.Fatalf("another address's connection was dropped: %v", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// A connection waiting for a handshake slot waits no longer than the
// handshake timeout.
func TestWaitingForASlotTimesOut(t *testing.T) {
	l, _, _ := listen(t, Options{MaxHandshakes: 1, HandshakeTimeout: 300 * time.Millisecond})
	first := dialFrom(t, l, "127.0.0.1")
	second := dialFrom(t, l, "127.0.0.1")
	for i, nc := range []net.Conn{first, second} {
		if !closedByServer(nc, 10*time.Second) {
			t.Fatalf("connection %d still open", i)
		}
	}
	// The count follows the close.
	waitUntil(t, "both timeouts counted", 10*time.Second, func() bool {
		m := l.Metrics()
		return m.Refused(ReasonHandshakeTimeout) == 2 && m.Pending == 0
	})
}

// tlsClient completes a TLS handshake with any certificate and then does
// nothing: a peer without the furl.
func tlsClient(t testing.TB, l *Listener, src string) *tls.Conn {
	t.Helper()
	raw := dialFrom(t, l, src)
	tc := tls.Client(raw, &tls.Config{
		InsecureSkipVerify: true, MinVersion: tls.VersionTLS13,
		Certificates: []tls.Certificate{newID(t).tlsCertificate()},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	return tc
}

// A peer that completes TLS but never fetches an object is closed after
// FetchTimeout; one that fetched stays.
func TestIdleConnectionClosedWithoutFetch(t *testing.T) {
	l, _, f := listen(t, Options{FetchTimeout: 300 * time.Millisecond})
	conn, err := Dial(ctxT(t), f, newID(t), capnp.Client{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	idle := tlsClient(t, l, "127.0.0.1")
	if !closedByServer(idle, 20*time.Second) {
		t.Fatal("a connection that never fetched is still open")
	}
	if got := l.Metrics().Refused(ReasonFetchTimeout); got != 1 {
		t.Errorf("fetch_timeout = %d, want 1", got)
	}
	time.Sleep(400 * time.Millisecond) // past the fetch timeout of conn
	if err := ping(ctxT(t), conn.Object()); err != nil {
		t.Fatalf("the node that fetched was closed too: %v", err)
	}
	waitUntil(t, "the idle connection to be forgotten", 10*time.Second, func() bool { return l.Metrics().Connections == 1 })
}

// rawFetch connects and fetches swissnum without tub.Dial's error
// handling, returning the RPC connection so the test sees it end.
func rawFetch(t testing.TB, l *Listener, f Furl, swissnum string) (*rpc.Conn, error) {
	t.Helper()
	nc, err := dialTLS(ctxT(t), l.Addr().String(), f.TubID, newID(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	conn := rpc.NewConn(newTransport(newCodec(nc, DefaultMaxMessageSize)), nil)
	t.Cleanup(func() { conn.Close() })
	boot := tubClient(conn.Bootstrap(ctxT(t)))
	defer boot.Release()
	fut, rel := boot.Fetch(ctxT(t), func(p tubFetchParams) error { return p.SetSwissnum(swissnum) })
	defer rel()
	_, err = fut.Struct()
	return conn, err
}

// A fetch with an unknown swiss number gets its answer, and then the
// connection is closed: a node has the furl, a guesser gets one try.
func TestUnknownSwissnumClosesConnection(t *testing.T) {
	l, _, f := listen(t, Options{})
	conn, err := rawFetch(t, l, f, NewSwissnum())
	if err == nil || !strings.Contains(err.Error(), "no object with that swiss number") {
		t.Fatalf("fetch error = %v, want the unknown-swiss-number answer", err)
	}
	select {
	case <-conn.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("connection still open after an unknown swiss number")
	}
	if got := l.Metrics().Refused(ReasonUnknownSwissnum); got != 1 {
		t.Errorf("unknown_swissnum = %d, want 1", got)
	}
}

// A fetch bigger than PreAuthMessageSize ends the connection before it is
// read: before the fetch a peer is nobody.
func TestBigMessageBeforeFetchRefused(t *testing.T) {
	l, _, f := listen(t, Options{PreAuthMessageSize: 1024})
	conn, err := rawFetch(t, l, f, strings.Repeat("a", 64<<10))
	if err == nil {
		t.Fatal("a 64 KiB fetch was answered")
	}
	select {
	case <-conn.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("connection still open after an oversized message")
	}
	if got := l.Metrics().Refused(ReasonMessageSize); got != 1 {
		t.Errorf("message_size = %d, want 1", got)
	}
	// After a fetch, the full MaxMessageSize applies (a big reply is fine).
	if _, err := rawFetch(t, l, f, f.Swissnum); err != nil {
		t.Fatal(err)
	}
}

// slowPinger's ping waits until released: calls to it stay in flight.
type slowPinger struct{ release chan struct{} }

func (b slowPinger) GetStats(context.Context, statsrpc.Provider_getStats) error { return nil }
func (b slowPinger) Ping(ctx context.Context, _ statsrpc.Provider_ping) error {
	select {
	case <-b.release:
	case <-ctx.Done():
	}
	return nil
}

// A peer with more calls in flight than MaxCallsInFlight is disconnected,
// not queued; three such peers make one warning (rate-limited), not one
// each from go-capnp besides.
func TestCallsInFlightBounded(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	l, err := Listen("127.0.0.1:0", newID(t), Options{MaxCallsInFlight: 16, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	b := slowPinger{release: make(chan struct{})}
	defer close(b.release)
	f := l.Register(capnp.Client(statsrpc.Provider_ServerToClient(b)))
	for i := range 3 {
		conn, err := Dial(ctxT(t), f, newID(t), capnp.Client{}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		ctx := ctxT(t)
		p := statsrpc.Provider(conn.Object())
		var rels []capnp.ReleaseFunc
		for range 40 {
			_, rel := p.Ping(ctx, nil)
			rels = append(rels, rel)
		}
		select {
		case <-conn.Done():
		case <-time.After(20 * time.Second):
			t.Fatalf("peer %d with 40 calls in flight is still connected (bound 16)", i)
		}
		for _, rel := range rels {
			rel()
		}
		conn.Close()
	}
	waitUntil(t, "3 refusals counted", 10*time.Second, func() bool { return l.Metrics().Refused(ReasonCallsInFlight) == 3 })
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Errorf("%d warnings for 3 peers over the bound, want 1:\n%s", n, logs.String())
	}
}

// A node whose replies, not yet consumed, hold more than MaxHeldBytes on
// the listener's side is disconnected.
func TestHeldBytesBounded(t *testing.T) {
	l, _, f := listen(t, Options{MaxMessageSize: 200 << 10, MaxHeldBytes: 256 << 10})
	conn, err := Dial(ctxT(t), f, newID(t), capnp.Client(statsrpc.Provider_ServerToClient(bigReplier{n: 4000})), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	server := newServerConn(t, l, nil)
	ctx := ctxT(t)
	prov := statsrpc.Provider(server.Bootstrap(ctx))
	defer prov.Release()
	// Each reply is about 150 KiB; keep them all.
	var rels []capnp.ReleaseFunc
	defer func() {
		for _, rel := range rels {
			rel()
		}
	}()
	for range 10 {
		fut, rel := prov.GetStats(ctx, nil)
		rels = append(rels, rel)
		if _, err := fut.Struct(); err != nil {
			break
		}
	}
	select {
	case <-conn.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("still connected with about 1 MiB of replies held (bound 256 KiB)")
	}
	if got := l.Metrics().Refused(ReasonHeldBytes); got != 1 {
		t.Errorf("held_bytes = %d, want 1", got)
	}
}

// Connections from one address beyond MaxConnsPerAddr are refused at once;
// another address still gets in.
func TestConnsPerAddrBounded(t *testing.T) {
	l, _, _ := listen(t, Options{MaxConnsPerAddr: 3, HandshakeTimeout: time.Minute})
	for range 3 {
		dialFrom(t, l, "127.0.0.6")
	}
	waitUntil(t, "accept", 10*time.Second, func() bool { return l.Metrics().Pending == 3 })
	if !closedByServer(dialFrom(t, l, "127.0.0.6"), 10*time.Second) {
		t.Fatal("a fourth connection from one address was kept")
	}
	dialFrom(t, l, "127.0.0.7")
	waitUntil(t, "another address's connection", 10*time.Second, func() bool { return l.Metrics().Pending == 4 })
	if got := l.Metrics().Refused(ReasonMaxConnsPerAddr); got != 1 {
		t.Errorf("max_conns_per_addr = %d, want 1", got)
	}
}

// Connections in total are bounded by MaxConns, and lower by the file
// descriptors FDReserve keeps free under RLIMIT_NOFILE.
func TestConnsBoundedInTotalAndByDescriptors(t *testing.T) {
	l, _, _ := listen(t, Options{MaxConns: 2, HandshakeTimeout: time.Minute})
	dialFrom(t, l, "127.0.0.8")
	dialFrom(t, l, "127.0.0.9")
	waitUntil(t, "accept", 10*time.Second, func() bool { return l.Metrics().Pending == 2 })
	if !closedByServer(dialFrom(t, l, "127.0.0.10"), 10*time.Second) {
		t.Fatal("a third connection was kept (MaxConns 2)")
	}
	if got := l.Metrics().Refused(ReasonMaxConns); got != 1 {
		t.Errorf("max_conns = %d, want 1", got)
	}

	soft := softFileLimit()
	if soft == 0 {
		t.Skip("no RLIMIT_NOFILE here")
	}
	l2, _, _ := listen(t, Options{FDReserve: int(soft) - 2, HandshakeTimeout: time.Minute})
	if m := l2.Metrics(); m.MaxConns != 2 {
		t.Fatalf("MaxConns in force = %d, want 2 (soft limit %d less the reserve)", m.MaxConns, soft)
	}
	dialFrom(t, l2, "127.0.0.8")
	dialFrom(t, l2, "127.0.0.9")
	waitUntil(t, "accept", 10*time.Second, func() bool { return l2.Metrics().Pending == 2 })
	if !closedByServer(dialFrom(t, l2, "127.0.0.10"), 10*time.Second) {
		t.Fatal("a connection into the descriptor reserve was kept")
	}
	if got := l2.Metrics().Refused(ReasonDescriptors); got != 1 {
		t.Errorf("descriptors = %d, want 1", got)
	}
}

func TestRaiseFileLimit(t *testing.T) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skip(err)
	}
	if lim.Max < 256 || lim.Max >= 1<<62 {
		t.Skipf("hard limit %d: nothing to raise to", lim.Max)
	}
	low := lim
	low.Cur = lim.Max / 2
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Skip(err)
	}
	defer syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	got, err := RaiseFileLimit()
	if err != nil {
		t.Fatal(err)
	}
	if got != lim.Max || softFileLimit() != lim.Max {
		t.Errorf("soft limit = %d (returned %d), want the hard limit %d", softFileLimit(), got, lim.Max)
	}
}

// pausingConn stops reading once paused, as a peer that never reads
// what it is sent.
type pausingConn struct {
	net.Conn
	paused chan struct{} // closed to pause
	resume chan struct{} // closed to read again
}

func (c *pausingConn) Read(b []byte) (int, error) {
	select {
	case <-c.paused:
		<-c.resume
	default:
	}
	return c.Conn.Read(b)
}

// A peer that stops reading while calls to it pile up is disconnected
// once the messages held for it go over sixteen times MaxCallsInFlight.
func TestSendBacklogBounded(t *testing.T) {
	l, _, f := listen(t, Options{MaxCallsInFlight: 8})
	raw := dialFrom(t, l, "127.0.0.1")
	raw.(*net.TCPConn).SetReadBuffer(4096)
	tc := tls.Client(raw, &tls.Config{
		InsecureSkipVerify: true, MinVersion: tls.VersionTLS13,
		Certificates: []tls.Certificate{newID(t).tlsCertificate()},
	})
	pc := &pausingConn{Conn: tc, paused: make(chan struct{}), resume: make(chan struct{})}
	defer close(pc.resume)
	conn, err := fetch(ctxT(t), newCodec(pc, DefaultMaxMessageSize), f, capnp.Client(statsrpc.Provider_ServerToClient(bigReplier{n: 1})), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	close(pc.paused)
	server := newServerConn(t, l, nil)
	ctx := ctxT(t)
	prov := statsrpc.Provider(server.Bootstrap(ctx))
	defer prov.Release()
	var rels []capnp.ReleaseFunc
	defer func() {
		for _, rel := range rels {
			rel()
		}
	}()
	for range 20000 {
		if l.Metrics().Refused(ReasonSendBacklog) > 0 {
			break
		}
		_, rel := prov.GetStats(ctx, nil)
		rels = append(rels, rel)
	}
	waitUntil(t, "the peer to be dropped", 20*time.Second, func() bool { return l.Metrics().Connections == 0 })
	if got := l.Metrics().Refused(ReasonSendBacklog); got != 1 {
		t.Errorf("send_backlog = %d, want 1", got)
	}
}
