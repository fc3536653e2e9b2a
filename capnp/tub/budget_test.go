package tub

import (
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/rpc"

	"capstats/capnp/statsrpc"
)

// replier is a node connected to a listener that answers getStats with
// bigReplier's reply, and the listener's side of its connection.
type replier struct {
	conn *Conn
	prov statsrpc.Provider // the node's provider, as the listener calls it
}

// connectRepliers connects n nodes from src that each answer getStats with
// a reply of entries names.
func connectRepliers(t *testing.T, l *Listener, f Furl, src string, n, entries int) []replier {
	t.Helper()
	out := make([]replier, 0, n)
	for range n {
		before := serverConns(l)
		conn, err := Dial(ctxT(t), f, newID(t), capnp.Client(statsrpc.Provider_ServerToClient(bigReplier{n: entries})), Options{LocalAddr: src})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		prov := statsrpc.Provider(newServerConn(t, l, before).Bootstrap(ctxT(t)))
		t.Cleanup(prov.Release)
		// Its answer is held as long as prov: let it arrive first.
		if err := ping(ctxT(t), capnp.Client(prov)); err != nil {
			t.Fatal(err)
		}
		out = append(out, replier{conn: conn, prov: prov})
	}
	return out
}

// newServerConn waits for the listener's side of a connection that is not
// among before, and returns it.
func newServerConn(t *testing.T, l *Listener, before map[*rpc.Conn]struct{}) *rpc.Conn {
	t.Helper()
	var server *rpc.Conn
	waitUntil(t, "the server side of a new connection", 10*time.Second, func() bool {
		for c := range serverConns(l) {
			if _, old := before[c]; !old {
				server = c
			}
		}
		return server != nil
	})
	return server
}

// serverConns returns the listener's sides of its connections now.
func serverConns(l *Listener) map[*rpc.Conn]struct{} {
	l.mu.RLock()
	defer l.mu.RUnlock()
	m := make(map[*rpc.Conn]struct{}, len(l.conns))
	for c := range l.conns {
		m[c] = struct{}{}
	}
	return m
}

// poll calls getStats on every replier at once and holds the replies as
// they arrive. It returns how many have arrived (read it with
// arrived.Load) and a function that releases those that have arrived so
// far; the test's end releases the rest.
func poll(t *testing.T, rs []replier) (arrived *atomic.Int64, releaseArrived func()) {
	t.Helper()
	arrived = new(atomic.Int64)
	var mu sync.Mutex
	var held []capnp.ReleaseFunc
	// A release waits for its answer: cancel the calls still waiting
	// first, or they would wait for room that the replies held keep.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	rels := make([]capnp.ReleaseFunc, 0, len(rs))
	t.Cleanup(func() {
		cancel()
		for _, rel := range rels {
			rel()
		}
	})
	for _, r := range rs {
		fut, rel := r.prov.GetStats(ctx, nil)
		rels = append(rels, rel)
		go func() {
			if _, err := fut.Struct(); err == nil {
				mu.Lock()
				held = append(held, rel)
				mu.Unlock()
				arrived.Add(1)
			}
		}()
	}
	return arrived, func() {
		mu.Lock()
		defer mu.Unlock()
		for _, rel := range held {
			rel()
		}
		held = nil
	}
}

// replySize is what one of bigReplier's replies takes of the buffer
// budget, and what the listener's connections hold without it (the
// bootstrap answers they keep), measured on an idle listener.
func replySize(t *testing.T, l *Listener, r replier) (size, idle int64) {
	t.Helper()
	idle = l.Metrics().BufferedBytes
	arrived, release := poll(t, []replier{r})
	waitUntil(t, "a reply to be held", 10*time.Second, func() bool {
		size = l.Metrics().BufferedBytes - idle
		return arrived.Load() == 1
	})
	release()
	waitUntil(t, "the reply to be released", 10*time.Second, func() bool { return l.Metrics().BufferedBytes == idle })
	return size, idle
}

// Replies that many connections hold at once stay within MaxBufferedBytes:
// the connections beyond it are not read until replies are released, and
// none is closed for it. Before, each connection was bounded alone, and
// 100 furl holders replying just under the message limit at once held
// 100 MiB.
func TestBufferedBytesBoundedAcrossConnections(t *testing.T) {
	const budget = 1 << 20
	l, _, f := listen(t, Options{MaxMessageSize: 256 << 10, MaxHeldBytes: 1 << 20, MaxBufferedBytes: budget, MaxBufferedBytesPerAddr: budget})
	rs := connectRepliers(t, l, f, "127.0.0.1", 12, 4000)
	size, idle := replySize(t, l, rs[0])
	fits := (budget - idle) / size
	if fits >= 12 || fits < 2 {
		t.Fatalf("a reply takes %d bytes: %d fit in the budget, want a test where some but not all 12 do", size, fits)
	}

	arrived, release := poll(t, rs)
	waitUntil(t, "the budget to fill", 20*time.Second, func() bool {
		return arrived.Load() == fits && l.Metrics().BufferWaits > 0
	})
	// Give the others time to arrive if nothing held them back.
	time.Sleep(300 * time.Millisecond)
	m := l.Metrics()
	if got := arrived.Load(); got != fits {
		t.Errorf("%d replies of %d bytes arrived and are held, want %d within a budget of %d", got, size, fits, budget)
	}
	if m.BufferedBytes > budget || m.MaxBufferedBytes != budget {
		t.Errorf("buffered %d bytes of %d, bound %d", m.BufferedBytes, m.MaxBufferedBytes, budget)
	}
	release()
	waitUntil(t, "every reply once the first are released", 20*time.Second, func() bool {
		release() // those that arrive meanwhile
		return arrived.Load() == 12
	})
	release()
	waitUntil(t, "the budget to be given back", 10*time.Second, func() bool { return l.Metrics().BufferedBytes == idle })
	for i, r := range rs {
		select {
		case <-r.conn.Done():
			t.Errorf("connection %d was closed: the budget holds peers back, it does not disconnect them", i)
		default:
		}
	}
	if m := l.Metrics(); m.BufferWaitTime <= 0 {
		t.Errorf("%d waits took %v in total", m.BufferWaits, m.BufferWaitTime)
	}
}

// One source address holds at most MaxBufferedBytesPerAddr: while its
// connections' replies fill its share, a node at another address is still
// read.
func TestBufferedBytesSharedByAddress(t *testing.T) {
	l, _, f := listen(t, Options{MaxMessageSize: 256 << 10, MaxHeldBytes: 1 << 20, MaxBufferedBytes: 4 << 20, MaxBufferedBytesPerAddr: 512 << 10})
	crowd := connectRepliers(t, l, f, "127.0.0.2", 8, 4000)
	other := connectRepliers(t, l, f, "127.0.0.3", 1, 4000)
	size, idle := replySize(t, l, other[0])
	fits := (512<<10 - idle*8/9) / size // 127.0.0.2's part of what is held idle

	arrived, release := poll(t, crowd)
	defer release()
	waitUntil(t, "127.0.0.2's share to fill", 20*time.Second, func() bool { return arrived.Load() == fits && l.Metrics().BufferWaits > 0 })
	got, releaseOther := poll(t, other)
	defer releaseOther()
	waitUntil(t, "127.0.0.3's reply while 127.0.0.2's share is full", 20*time.Second, func() bool { return got.Load() == 1 })
	if n := arrived.Load(); n != fits {
		t.Errorf("127.0.0.2 holds %d replies of %d bytes, want %d within its share of 512 KiB", n, size, fits)
	}
}

// stallFrame is the frame header of a one-segment message of words words
// and the first part bytes of its body.
func stallFrame(words uint32, part int) []byte {
	b := make([]byte, 8+part)
	binary.LittleEndian.PutUint32(b[4:], words)
	return b
}

// stalledPeer fetches f's object over its own RPC connection and then
// writes, under that connection, the beginning of a message of words
// words: part bytes of its body, and never the rest. It returns the RPC
// connection, whose end shows the listener closed it.
func stalledPeer(t *testing.T, l *Listener, f Furl, src string, words uint32, part int) *rpc.Conn {
	t.Helper()
	tc, err := dialTLS(ctxT(t), l.Addr().String(), f.TubID, newID(t), Options{LocalAddr: src})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	conn := rpc.NewConn(newTransport(newCodec(tc, DefaultMaxMessageSize)), nil)
	boot := tubClient(conn.Bootstrap(ctxT(t)))
	fut, rel := boot.Fetch(ctxT(t), func(p tubFetchParams) error { return p.SetSwissnum(f.Swissnum) })
	if _, err := fut.Struct(); err != nil {
		t.Fatal(err)
	}
	// Released once the listener has closed the connection: until then the
	// RPC connection writes nothing that would land in the stalled body.
	t.Cleanup(func() { rel(); boot.Release() })
	if _, err := tc.Write(stallFrame(words, part)); err != nil {
		t.Fatal(err)
	}
	return conn
}

// A peer that sends a frame header and then trickles, or withholds, the
// body is closed after MessageTimeout, and what its message took from the
// budget is given back.
func TestUnfinishedMessageTimesOut(t *testing.T) {
	l, _, f := listen(t, Options{MessageTimeout: 300 * time.Millisecond, FetchTimeout: time.Minute})
	conn := stalledPeer(t, l, f, "127.0.0.1", 256, 100) // 2 KiB announced, 100 bytes sent
	waitUntil(t, "the message's size to be taken", 10*time.Second, func() bool { return l.Metrics().BufferedBytes >= 8+2048 })
	select {
	case <-conn.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("a peer that sent 100 bytes of a 2 KiB message is still connected")
	}
	if got := l.Metrics().Refused(ReasonMessageTimeout); got != 1 {
		t.Errorf("message_timeout = %d, want 1", got)
	}
	waitUntil(t, "the budget to be given back", 10*time.Second, func() bool { return l.Metrics().BufferedBytes == 0 })
}

// While a node's reply waits for room, stalled messages that fill the
// budget are closed after a quarter of MessageTimeout rather than all of
// it, so that the node waits seconds, not the whole timeout.
func TestStalledMessagesClosedWhenOthersWait(t *testing.T) {
	const timeout = 8 * time.Second
	l, _, f := listen(t, Options{MaxMessageSize: 256 << 10, MaxHeldBytes: 1 << 20, MaxBufferedBytes: 1 << 20, MaxBufferedBytesPerAddr: 1 << 20, MessageTimeout: timeout, FetchTimeout: time.Minute})
	node := connectRepliers(t, l, f, "127.0.0.1", 1, 50)
	var stalled []*rpc.Conn
	for i := range 4 {
		stalled = append(stalled, stalledPeer(t, l, f, fmt.Sprintf("127.0.0.%d", 20+i), 32<<10-16, 100<<10)) // just under 256 KiB each
	}
	waitUntil(t, "the stalled messages to fill the budget", 10*time.Second, func() bool { return l.Metrics().BufferedBytes > 1<<20-8<<10 })
	start := time.Now()
	arrived, release := poll(t, node)
	defer release()
	waitUntil(t, "the node's reply", 20*time.Second, func() bool { return arrived.Load() == 1 })
	waited := time.Since(start)
	m := l.Metrics()
	if m.Refused(ReasonMessageStalled) < 1 || m.Refused(ReasonMessageTimeout) != 0 {
		t.Errorf("message_stalled %d, message_timeout %d: the reply got in after %v, want stalled messages closed after a quarter of the %v timeout",
			m.Refused(ReasonMessageStalled), m.Refused(ReasonMessageTimeout), waited, timeout)
	}
	for i, c := range stalled {
		select {
		case <-c.Done():
		case <-time.After(20 * time.Second):
			t.Errorf("stalled peer %d still connected", i)
		}
	}
}

// Before a fetch, messages do not take from the budget: peers without the
// furl that stall messages, from many addresses, must not keep a node
// waiting. They are bounded by PreAuthMessageSize and FetchTimeout.
func TestStalledMessagesBeforeFetchTakeNothing(t *testing.T) {
	l, _, f := listen(t, Options{MaxMessageSize: 16 << 10, MaxBufferedBytes: 16 << 10, MessageTimeout: time.Minute, FetchTimeout: time.Minute})
	for i := range 24 {
		tc := tlsClient(t, l, fmt.Sprintf("127.0.0.%d", 10+i%8))
		if _, err := tc.Write(stallFrame(256, 2000)); err != nil { // 2 KiB announced, all but 56 bytes sent
			t.Fatal(err)
		}
	}
	waitUntil(t, "the stalled connections to be read", 10*time.Second, func() bool { return l.Metrics().Connections >= 24 })
	time.Sleep(100 * time.Millisecond)
	if b := l.Metrics().BufferedBytes; b != 0 {
		t.Errorf("%d bytes of the budget taken by peers that have not fetched", b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := Dial(ctx, f, newID(t), capnp.Client{}, Options{})
	if err != nil {
		t.Fatalf("a node could not fetch while 24 peers stalled 48 KiB of messages against a 16 KiB budget: %v", err)
	}
	defer conn.Close()
	if err := ping(ctx, conn.Object()); err != nil {
		t.Fatal(err)
	}
}

// A frame header that announces more than the limit ends the connection
// before anything is taken or allocated for it.
func TestOversizedFrameTakesNothing(t *testing.T) {
	l, _, _ := listen(t, Options{FetchTimeout: time.Minute})
	tc := tlsClient(t, l, "127.0.0.1")
	var hdr [8]byte
	binary.LittleEndian.PutUint32(hdr[4:], 1<<28) // 2 GiB
	if _, err := tc.Write(hdr[:]); err != nil {
		t.Fatal(err)
	}
	if !closedByServer(tc, 20*time.Second) {
		t.Fatal("a peer that announced a 2 GiB message is still connected")
	}
	if got := l.Metrics().Refused(ReasonMessageSize); got != 1 {
		t.Errorf("message_size = %d, want 1", got)
	}
	if b := l.Metrics().BufferedBytes; b != 0 {
		t.Errorf("buffered %d bytes for a refused frame", b)
	}
}

// Budget waits end when the connection does: a reader waiting for room
// does not outlive its connection (the listener closes cleanly, and no
// goroutine is left).
func TestBudgetWaitEndsWithConnection(t *testing.T) {
	base := runtime.NumGoroutine()
	l, err := Listen("127.0.0.1:0", newID(t), Options{MaxMessageSize: 256 << 10, MaxHeldBytes: 1 << 20, MaxBufferedBytes: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	f := l.Register(capnp.Client(statsrpc.Provider_ServerToClient(&pinger{})))
	rs := connectRepliers(t, l, f, "127.0.0.1", 3, 4000)
	arrived, release := poll(t, rs)
	waitUntil(t, "one reply held and the others waiting", 20*time.Second, func() bool {
		return arrived.Load() == 1 && l.Metrics().BufferWaits >= 2
	})
	done := make(chan struct{})
	go func() { l.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Listener.Close did not return while readers waited for the budget")
	}
	release()
	for _, r := range rs {
		r.conn.Close()
	}
	waitGoroutines(t, base)
}
