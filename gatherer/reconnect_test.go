package gatherer

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"capstats/capnp/statsrpc"
	"capstats/internal/fakenode"
	"capstats/internal/testutil"
)

// heldCall is a provider whose getStats has not returned yet, standing in
// for a call on a connection that is ending: it returns when release is
// closed, whatever its context does. shut is closed once the gatherer has
// let go of it, that is after the poll that called it has finished.
type heldCall struct{ entered, release, shut chan struct{} }

func (h heldCall) GetStats(context.Context, statsrpc.Provider_getStats) error {
	close(h.entered)
	<-h.release
	return errors.New("the old connection's call")
}

func (heldCall) Ping(context.Context, statsrpc.Provider_ping) error { return nil }

func (h heldCall) Shutdown() { close(h.shut) }

// A node that reconnects while a poll of its old connection is still in
// flight is polled on the new connection at once, not a round later (an
// Interval, a minute by default, with the node up and no sample), and the
// old call's outcome, when it comes, is not recorded against the new one.
func TestReconnectWhileOldPollInFlight(t *testing.T) {
	d, _ := startDaemon(t, Config{Interval: time.Hour, Timeout: time.Minute})
	g := d.Gatherer()
	p := fakenode.New(t, fakenode.AnswerWith(sample))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	old, err := p.Attach(ctx, d.Furl, "flapper")
	if err != nil {
		t.Fatal(err)
	}
	var n *node
	testutil.WaitFor(t, "the first poll", 20*time.Second, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		n = g.nodes[p.TubID()]
		return n != nil && n.polling == nil && n.entry.Timestamp > 0
	})

	// A poll of the old connection, still in flight.
	h := heldCall{make(chan struct{}), make(chan struct{}), make(chan struct{})}
	held := statsrpc.Provider_ServerToClient(h)
	g.mu.Lock()
	real := n.provider
	n.provider = held
	g.mu.Unlock()
	g.pollNode(n, nil)
	g.mu.Lock()
	n.provider = real
	g.mu.Unlock()
	held.Release() // the poll holds its own reference
	release := sync.OnceFunc(func() { close(h.release) })
	defer release()
	select {
	case <-h.entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the held poll never started")
	}

	// The node drops the connection and redials.
	calls := p.Calls()
	old.Close()
	conn, err := p.Attach(ctx, d.Furl, "flapper")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	testutil.WaitFor(t, "a poll on the new connection", 20*time.Second, func() bool {
		return p.Calls() > calls
	})
	testutil.WaitFor(t, "its answer recorded", 20*time.Second, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return n.polling == nil && n.entry.Up && n.entry.LastError == ""
	})

	// The old call returns at last, with an error of the old connection.
	release()
	select {
	case <-h.shut:
	case <-time.After(20 * time.Second):
		t.Fatal("the held poll never finished")
	}
	g.mu.Lock()
	lastErr, polling := n.entry.LastError, n.polling
	g.mu.Unlock()
	if lastErr != "" {
		t.Errorf("the old connection's outcome was recorded for the new one: last_error %q", lastErr)
	}
	if e := g.PollErrors(p.TubID()); e != 0 {
		t.Errorf("%d poll errors, want 0", e)
	}
	if polling != nil {
		t.Errorf("a poll still marked in flight after every call returned")
	}

	// And the next round polls the new connection again.
	calls = p.Calls()
	g.Round(context.Background())
	testutil.WaitFor(t, "the next round to poll the new connection", 20*time.Second, func() bool {
		return p.Calls() > calls
	})
}
