package gatherer

import (
	"context"
	"strings"
	"testing"
	"time"

	"capstats/capnp/statsrpc"
	"capstats/internal/fakenode"
	"capstats/internal/testutil"
	"capstats/stats"
	"capstats/wire"
)

// atDeadline is a provider that answers getStats successfully the moment
// the caller's deadline passes: it is served in the gatherer's process, so
// its context is the poll's, and go-capnp delivers a local server's reply
// whatever the context did meanwhile.
type atDeadline struct{ snap stats.Snapshot }

func (p atDeadline) GetStats(ctx context.Context, call statsrpc.Provider_getStats) error {
	<-ctx.Done()
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	st, err := res.NewStats()
	if err != nil {
		return err
	}
	return wire.FromSnapshot(p.snap, st)
}

func (atDeadline) Ping(context.Context, statsrpc.Provider_ping) error { return nil }

// A reply that arrives as the round's deadline passes is a success: a poll
// is timed out only when the call failed with DeadlineExceeded. Three such
// replies in a row must not close the node's connection.
func TestReplyAtDeadlineIsNotATimeout(t *testing.T) {
	d, _ := startDaemon(t, Config{Interval: time.Hour, MaxTimeouts: 3})
	p, conn := fakenode.Connect(t, d.Furl, "late", fakenode.AnswerWith(sample))
	g := d.Gatherer()
	var n *node
	testutil.WaitFor(t, "the first poll", 20*time.Second, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		n = g.nodes[p.TubID()]
		return n != nil && n.polling == nil && n.entry.Timestamp > 0
	})
	g.mu.Lock()
	peer := n.peer
	g.mu.Unlock()

	want := fakenode.SnapshotOf(3)
	late := statsrpc.Provider_ServerToClient(atDeadline{want})
	defer late.Release()
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		g.poll(ctx, n, late.AddRef(), peer)
		cancel()
		if ctx.Err() != context.DeadlineExceeded {
			t.Fatalf("poll %d returned before its deadline", i)
		}
		g.mu.Lock()
		lastErr, timeouts, got := n.entry.LastError, n.timeouts, n.entry.Stats
		g.mu.Unlock()
		if lastErr != "" || timeouts != 0 {
			t.Fatalf("poll %d: a reply at the deadline recorded as a failure: last_error %q, %d timeouts", i, lastErr, timeouts)
		}
		if got.Stats.Map()["test.stat_2"] != want.Stats.Map()["test.stat_2"] {
			t.Fatalf("poll %d: the reply's stats were not kept: %v", i, got.Stats)
		}
	}
	select {
	case <-conn.Done():
		t.Fatal("replies at the deadline closed the node's connection")
	default:
	}
	if e := g.PollErrors(p.TubID()); e != 0 {
		t.Errorf("%d poll errors, want 0", e)
	}
}

// A call that really runs out of time is still a timeout, and the error
// says so.
func TestHungCallIsATimeout(t *testing.T) {
	d, _ := startDaemon(t, Config{Interval: time.Hour, Timeout: 50 * time.Millisecond})
	p, _ := fakenode.Connect(t, d.Furl, "hung", nil)
	g := d.Gatherer()
	testutil.WaitFor(t, "the first poll to time out", 20*time.Second, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		n := g.nodes[p.TubID()]
		return n != nil && n.polling == nil && n.timeouts == 1 && strings.Contains(n.entry.LastError, "timed out")
	})
}
