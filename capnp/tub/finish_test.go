package tub

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	"capstats/capnp/statsrpc"
)

// blocker is a Provider whose ping answers at once and whose getStats
// waits until its call is canceled, and says so.
type blocker struct {
	started, canceled chan struct{}
}

func (b blocker) GetStats(ctx context.Context, _ statsrpc.Provider_getStats) error {
	b.started <- struct{}{}
	<-ctx.Done()
	b.canceled <- struct{}{}
	return ctx.Err()
}

func (blocker) Ping(context.Context, statsrpc.Provider_ping) error { return nil }

// dialCounting connects to f as Dial does, over a connection that counts
// its writes, with a codec that holds a Finish for holdFor.
func dialCounting(t *testing.T, ctx context.Context, f Furl, holdFor time.Duration) (*Conn, *codec, *countingConn) {
	t.Helper()
	nc, err := dialTLS(ctx, f.Hints[0], f.TubID, newID(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	cc := &countingConn{Conn: nc}
	cd := newCodec(cc, DefaultMaxMessageSize)
	cd.holdFor = holdFor
	conn, err := fetch(ctx, cd, f, capnp.Client{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, cd, cc
}

// heldMessages decodes what the codec holds.
func heldMessages(t *testing.T, cd *codec) []rpccp.Message {
	t.Helper()
	cd.mu.Lock()
	b := append([]byte(nil), cd.held...)
	cd.mu.Unlock()
	var ms []rpccp.Message
	dec := capnp.NewDecoder(bytes.NewReader(b))
	for {
		msg, err := dec.Decode()
		if errors.Is(err, io.EOF) {
			return ms
		}
		if err != nil {
			t.Fatalf("held bytes: %v", err)
		}
		m, err := rpccp.ReadRootMessage(msg)
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
}

// waitFor polls cond until it holds or the give-up bound passes.
func waitFor(cond func() bool) bool {
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// Over a real RPC connection (go-capnp at both ends, mutual TLS on
// loopback) each poll costs one write: the Finish go-capnp sends after a
// returned call is held and rides with the next call. A Finish that
// cancels a call goes out at once and cancels it on the far side. Both
// depend on how go-capnp sets releaseResultCaps on its two kinds of
// Finish; a go-capnp that changes that fails here.
func TestFinishOverRPC(t *testing.T) {
	l, err := Listen("127.0.0.1:0", newID(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	b := blocker{started: make(chan struct{}, 1), canceled: make(chan struct{}, 1)}
	f := l.Register(capnp.Client(statsrpc.Provider_ServerToClient(b)))
	ctx := ctxT(t)
	// The hold lasts longer than the test, so only a next message takes
	// the Finish along.
	conn, cd, cc := dialCounting(t, ctx, f, time.Hour)
	provider := statsrpc.Provider(conn.Object())
	// Setting up sends more than calls (the bootstrap's Finish, the
	// Release of the bootstrap capability); wait for the fetch's delayed
	// Finish, the last of them, to be held before counting.
	if !waitFor(func() bool { return len(heldMessages(t, cd)) > 0 }) {
		t.Fatal("no Finish held after the fetch: go-capnp's delayed Finish was written at once (did its releaseResultCaps change?)")
	}

	for i := range 5 {
		before := cc.writes.Load()
		if err := ping(ctx, capnp.Client(provider)); err != nil {
			t.Fatal(err)
		}
		// go-capnp sends the Finish a while after the return.
		if !waitFor(func() bool { return len(heldMessages(t, cd)) > 0 || cc.writes.Load() > before+1 }) {
			t.Fatalf("poll %d: no Finish after the return", i)
		}
		if n := cc.writes.Load() - before; n != 1 {
			t.Fatalf("poll %d took %d writes, want 1: the Finish after a return was written on its own (did go-capnp's delayed Finish change its releaseResultCaps?)", i, n)
		}
		held := heldMessages(t, cd)
		if len(held) != 1 || held[0].Which() != rpccp.Message_Which_finish {
			t.Fatalf("poll %d: holding %d messages, want the one Finish", i, len(held))
		}
		if fin, _ := held[0].Finish(); fin.ReleaseResultCaps() {
			t.Fatalf("poll %d: the held Finish sets releaseResultCaps", i)
		}
	}

	before := cc.writes.Load()
	callCtx, cancel := context.WithCancel(ctx)
	fut, release := provider.GetStats(callCtx, nil)
	defer release()
	select {
	case <-b.started:
	case <-ctx.Done():
		t.Fatal("getStats never reached the provider")
	}
	if n := cc.writes.Load() - before; n != 1 {
		t.Fatalf("the call with the held Finish took %d writes, want 1", n)
	}
	cancel()
	select {
	case <-b.canceled:
	case <-time.After(15 * time.Second):
		t.Fatal("canceling the call did not cancel it on the far side: its Finish was held (did go-capnp's cancelling Finish stop setting releaseResultCaps?)")
	}
	if n := cc.writes.Load() - before; n != 2 {
		t.Fatalf("call and its cancelling Finish took %d writes, want 2", n)
	}
	if held := heldMessages(t, cd); len(held) != 0 {
		t.Fatalf("holding %d messages after the cancelling Finish, want none", len(held))
	}
	if _, err := fut.Struct(); err == nil {
		t.Fatal("the canceled call succeeded")
	}
}

// On an idle connection a held Finish goes out on its own after holdFor,
// so the far side does not keep the answer until a next call that may
// never come.
func TestHeldFinishFlushedOnIdleConnection(t *testing.T) {
	_, _, f := listen(t, Options{})
	ctx := ctxT(t)
	conn, cd, cc := dialCounting(t, ctx, f, time.Hour)
	// Let setting up finish (see TestFinishOverRPC), then hold briefly:
	// the ping's call takes the fetch's Finish along, and the ping's own
	// Finish has to go out alone.
	if !waitFor(func() bool { return len(heldMessages(t, cd)) > 0 }) {
		t.Fatal("no Finish held after the fetch: go-capnp's delayed Finish was written at once (did its releaseResultCaps change?)")
	}
	cd.mu.Lock()
	cd.holdFor = 20 * time.Millisecond
	cd.mu.Unlock()
	before := cc.writes.Load()
	if err := ping(ctx, conn.Object()); err != nil {
		t.Fatal(err)
	}
	// The call, then its Finish alone: no other message is sent.
	if !waitFor(func() bool { return cc.writes.Load() >= before+2 }) {
		t.Fatalf("the Finish of an idle connection was never written (%d writes since the call, holding %d messages)", cc.writes.Load()-before, len(heldMessages(t, cd)))
	}
	if held := heldMessages(t, cd); len(held) != 0 {
		t.Fatalf("still holding %d messages after the flush", len(held))
	}
	// The connection still works, and the next call writes no stale Finish.
	if err := ping(ctx, conn.Object()); err != nil {
		t.Fatal(err)
	}
}

// loopbackPair returns the two ends of a loopback TCP connection.
func loopbackPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	nc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { peer.Close() })
	return nc, peer
}

// The idle flush writes exactly the held Finish, once; the next message
// goes alone.
func TestIdleFlushWritesTheHeldFinishOnce(t *testing.T) {
	nc, peer := loopbackPair(t)
	cc := &countingConn{Conn: nc}
	cd := newCodec(cc, 1<<20)
	cd.holdFor = 20 * time.Millisecond
	tr := newTransport(cd)
	send := func(build func(rpccp.Message) error) {
		t.Helper()
		out, err := tr.NewMessage()
		if err != nil {
			t.Fatal(err)
		}
		defer out.Release()
		if err := build(out.Message()); err != nil {
			t.Fatal(err)
		}
		if err := out.Send(); err != nil {
			t.Fatal(err)
		}
	}
	send(func(m rpccp.Message) error {
		fin, err := m.NewFinish()
		fin.SetQuestionId(7)
		fin.SetReleaseResultCaps(false)
		return err
	})
	dec := capnp.NewDecoder(peer)
	peer.SetReadDeadline(time.Now().Add(15 * time.Second))
	read := func() string {
		t.Helper()
		msg, err := dec.Decode()
		if err != nil {
			t.Fatalf("peer read: %v", err)
		}
		m, err := rpccp.ReadRootMessage(msg)
		if err != nil {
			t.Fatal(err)
		}
		return m.Which().String()
	}
	if got := read(); got != "finish" {
		t.Fatalf("peer read %s, want the held finish", got)
	}
	if n := cc.writes.Load(); n != 1 {
		t.Fatalf("the flush took %d writes, want 1", n)
	}
	send(func(m rpccp.Message) error {
		call, err := m.NewCall()
		call.SetQuestionId(8)
		return err
	})
	if got := read(); got != "call" {
		t.Fatalf("peer read %s after the flush, want the call alone", got)
	}
	if n := cc.writes.Load(); n != 2 {
		t.Fatalf("%d writes in all, want 2", n)
	}
}

// Closing the codec stops the timer of a held Finish.
func TestCloseStopsTheFlushTimer(t *testing.T) {
	nc, _ := loopbackPair(t)
	cc := &countingConn{Conn: nc}
	cd := newCodec(cc, 1<<20)
	cd.holdFor = time.Hour
	out, err := newTransport(cd).NewMessage()
	if err != nil {
		t.Fatal(err)
	}
	defer out.Release()
	fin, err := out.Message().NewFinish()
	if err != nil {
		t.Fatal(err)
	}
	fin.SetReleaseResultCaps(false)
	if err := out.Send(); err != nil {
		t.Fatal(err)
	}
	cd.Close()
	if cd.flush.Stop() {
		t.Fatal("the flush timer still ran after Close")
	}
	if n := cc.writes.Load(); n != 0 {
		t.Fatalf("%d writes, want none", n)
	}
}
