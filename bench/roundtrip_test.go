//go:build linux

package bench

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"capstats/capnp/statsrpc"
	"capstats/capnp/tub"
	"capstats/internal/fakenode"
	"capstats/stats"
	"capstats/wire"
)

// roundTripEntries is the size of the reply in the round-trip benchmarks.
const roundTripEntries = 50

// provider answers getStats with a fixed snapshot and ping with nothing.
type provider struct{ snap stats.Snapshot }

func (p *provider) GetStats(_ context.Context, call statsrpc.Provider_getStats) error {
	return fakenode.AnswerWith(p.snap)(call)
}

func (p *provider) Ping(context.Context, statsrpc.Provider_ping) error { return nil }

// catcher is a Gatherer object that hands over the provider it is given.
type catcher struct{ got chan statsrpc.Provider }

func (c catcher) Provide(_ context.Context, call statsrpc.Gatherer_provide) error {
	c.got <- call.Args().Provider().AddRef()
	return nil
}

// roundTrip is one connection set up the way a node and the gatherer set
// theirs up: the node dials the gatherer's listener over mutual TLS on
// loopback and provides; the gatherer side calls the provider it received.
type roundTrip struct {
	ln   *tub.Listener
	conn *tub.Conn
	prov statsrpc.Provider
	dec  wire.Decoder // the poller's, as a gatherer has one
}

var (
	rtOnce sync.Once
	rt     *roundTrip
	rtErr  error
)

// sharedRoundTrip returns the connection shared by the round-trip
// benchmarks, so that they compare calls on the same connection.
func sharedRoundTrip(tb testing.TB) *roundTrip {
	tb.Helper()
	rtOnce.Do(func() { rt, rtErr = newRoundTrip() })
	if rtErr != nil {
		tb.Fatal(rtErr)
	}
	return rt
}

func newRoundTrip() (*roundTrip, error) {
	gid, err := tub.NewIdentity()
	if err != nil {
		return nil, err
	}
	nid, err := tub.NewIdentity()
	if err != nil {
		return nil, err
	}
	ln, err := tub.Listen("127.0.0.1:0", gid, tub.Options{})
	if err != nil {
		return nil, err
	}
	c := catcher{got: make(chan statsrpc.Provider, 1)}
	furl := ln.Register(capnp.Client(statsrpc.Gatherer_ServerToClient(c)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := tub.Dial(ctx, furl, nid, capnp.Client{}, tub.Options{})
	if err != nil {
		ln.Close()
		return nil, err
	}
	half := roundTripEntries / 2
	p := &provider{snap: Snapshot(1, half, roundTripEntries-half)}
	fut, release := statsrpc.Gatherer(conn.Object()).Provide(ctx, func(a statsrpc.Gatherer_provide_Params) error {
		return a.SetProvider(statsrpc.Provider_ServerToClient(p))
	})
	_, err = fut.Struct()
	release()
	if err != nil {
		conn.Close()
		ln.Close()
		return nil, err
	}
	select {
	case prov := <-c.got:
		return &roundTrip{ln: ln, conn: conn, prov: prov}, nil
	case <-ctx.Done():
		conn.Close()
		ln.Close()
		return nil, errors.New("provider never arrived")
	}
}

func closeRoundTrip() {
	if rt != nil {
		rt.prov.Release()
		rt.conn.Close()
		rt.ln.Close()
		rt = nil
	}
}

// getStats is one poll as the gatherer makes it: a call with a timeout,
// the reply decoded and checked into a stats.Snapshot.
func (r *roundTrip) getStats() (stats.Snapshot, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fut, release := r.prov.GetStats(ctx, nil)
	defer release()
	res, err := fut.Struct()
	if err != nil {
		return stats.Snapshot{}, err
	}
	st, err := res.Stats()
	if err != nil {
		return stats.Snapshot{}, err
	}
	return r.dec.ToSnapshot(st, wire.DefaultLimits)
}

// ping is the no-op call, made the same way.
func (r *roundTrip) ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fut, release := r.prov.Ping(ctx, nil)
	defer release()
	_, err := fut.Struct()
	return err
}

// BenchmarkNoopCall is the baseline of BenchmarkGetStatsRoundTrip:
// Provider.ping on the same connection, over mutual TLS on loopback.
func BenchmarkNoopCall(b *testing.B) {
	r := sharedRoundTrip(b)
	for b.Loop() {
		if err := r.ping(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetStatsRoundTrip is one getStats call whose reply holds 50
// entries (25 counters, 25 stats), encoded by wire.FromSnapshot and decoded
// by wire.ToSnapshot, as the gatherer polls.
func BenchmarkGetStatsRoundTrip(b *testing.B) {
	r := sharedRoundTrip(b)
	for b.Loop() {
		snap, err := r.getStats()
		if err != nil {
			b.Fatal(err)
		}
		if snap.Counters.Len()+snap.Stats.Len() != roundTripEntries {
			b.Fatalf("got %d entries", snap.Counters.Len()+snap.Stats.Len())
		}
	}
}

// BenchmarkGetStatsVsNoop alternates the two calls on the same connection,
// so that both see the same machine load, and reports getStats' time over
// ping's as ratio (the target is <= 1.5).
func BenchmarkGetStatsVsNoop(b *testing.B) {
	r := sharedRoundTrip(b)
	var tGet, tPing time.Duration
	n := 0
	for b.Loop() {
		t0 := time.Now()
		if err := r.ping(); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := r.getStats(); err != nil {
			b.Fatal(err)
		}
		tGet += time.Since(t1)
		tPing += t1.Sub(t0)
		n++
	}
	b.ReportMetric(float64(tGet.Nanoseconds())/float64(n), "getstats-ns")
	b.ReportMetric(float64(tPing.Nanoseconds())/float64(n), "noop-ns")
	b.ReportMetric(float64(tGet)/float64(tPing), "ratio")
}

// BenchmarkWireEncode50 and BenchmarkWireDecode50 are the conversion
// alone, without RPC: what getStats adds to a no-op call on the node's side
// (a 50-entry snapshot into a fresh message, wire.FromSnapshot) and on the
// gatherer's (checked back into a snapshot, wire.ToSnapshot).
func BenchmarkWireEncode50(b *testing.B) {
	half := roundTripEntries / 2
	snap := Snapshot(1, half, roundTripEntries-half)
	for b.Loop() {
		_, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
		if err != nil {
			b.Fatal(err)
		}
		st, err := statsrpc.NewRootStats(seg)
		if err != nil {
			b.Fatal(err)
		}
		if err := wire.FromSnapshot(snap, st); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWireDecode50(b *testing.B) {
	half := roundTripEntries / 2
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		b.Fatal(err)
	}
	st, err := statsrpc.NewRootStats(seg)
	if err != nil {
		b.Fatal(err)
	}
	if err := wire.FromSnapshot(Snapshot(1, half, roundTripEntries-half), st); err != nil {
		b.Fatal(err)
	}
	var dec wire.Decoder // one per gatherer, as it polls
	for b.Loop() {
		msg.ResetReadLimit(1 << 30) // each read counts against the traversal limit
		if _, err := dec.ToSnapshot(st, wire.DefaultLimits); err != nil {
			b.Fatal(err)
		}
	}
}

// TestRoundTrip checks the round-trip harness: both calls work and the
// reply has 50 entries with their values.
func TestRoundTrip(t *testing.T) {
	r := sharedRoundTrip(t)
	if err := r.ping(); err != nil {
		t.Fatal(err)
	}
	snap, err := r.getStats()
	if err != nil {
		t.Fatal(err)
	}
	half := roundTripEntries / 2
	want := Snapshot(1, half, roundTripEntries-half)
	if snap.Counters.Len() != half || snap.Stats.Len() != roundTripEntries-half {
		t.Fatalf("got %d counters, %d stats", snap.Counters.Len(), snap.Stats.Len())
	}
	for k, v := range want.Stats.All() {
		if snap.Stats.Map()[k] != v {
			t.Errorf("stat %s: got %v, want %v", k, snap.Stats.Map()[k], v)
		}
	}
}
