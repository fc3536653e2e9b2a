// Package fakenode is a node for tests: its own identity, a real TLS
// connection to a gatherer, and getStats answers scripted by the test,
// including ones no honest node sends (hangs, failures, hostile replies).
package fakenode

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"capstats/capnp/statsrpc"
	"capstats/capnp/tub"
	"capstats/stats"
	"capstats/wire"
)

// Answer fills in a reply to getStats. A nil Answer hangs until the call
// is cancelled.
type Answer func(statsrpc.Provider_getStats) error

// Provider is a scripted statsrpc.Provider with an identity of its own.
type Provider struct {
	ID *tub.Identity

	calls  atomic.Int64
	mu     sync.Mutex
	answer Answer
}

// New returns a provider with a fresh identity.
func New(t testing.TB, answer Answer) *Provider {
	t.Helper()
	id, err := tub.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return &Provider{ID: id, answer: answer}
}

// TubID returns the provider's tub ID.
func (p *Provider) TubID() string { return p.ID.TubID() }

// SetAnswer changes how the provider answers from the next call on.
func (p *Provider) SetAnswer(a Answer) {
	p.mu.Lock()
	p.answer = a
	p.mu.Unlock()
}

// Calls counts getStats calls received.
func (p *Provider) Calls() int64 { return p.calls.Load() }

// GetStats implements statsrpc.Provider_Server.
func (p *Provider) GetStats(ctx context.Context, call statsrpc.Provider_getStats) error {
	p.calls.Add(1)
	p.mu.Lock()
	a := p.answer
	p.mu.Unlock()
	if a == nil {
		call.Go() // let other calls in while this one hangs
		<-ctx.Done()
		return ctx.Err()
	}
	return a(call)
}

// Ping implements statsrpc.Provider_Server.
func (p *Provider) Ping(context.Context, statsrpc.Provider_ping) error { return nil }

// Client returns a capability for the provider.
func (p *Provider) Client() statsrpc.Provider { return statsrpc.Provider_ServerToClient(p) }

// Attach dials furl, calls provide(p, nickname) and waits for the reply.
// The caller closes the Conn.
func (p *Provider) Attach(ctx context.Context, furl tub.Furl, nickname string) (*tub.Conn, error) {
	conn, err := tub.Dial(ctx, furl, p.ID, capnp.Client{}, tub.Options{})
	if err != nil {
		return nil, err
	}
	fut, rel := statsrpc.Gatherer(conn.Object()).Provide(ctx, func(a statsrpc.Gatherer_provide_Params) error {
		if err := a.SetNickname(nickname); err != nil {
			return err
		}
		return a.SetProvider(p.Client())
	})
	_, err = fut.Struct()
	rel()
	if err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// StayAttached keeps p attached to furl, re-dialling 100ms after every
// drop or failure, until ctx is done.
func (p *Provider) StayAttached(ctx context.Context, furl tub.Furl, nickname string) {
	r := tub.NewReconnector(func(ctx context.Context) (bool, error) {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := p.Attach(dctx, furl, nickname)
		cancel()
		if err != nil {
			return false, err
		}
		defer conn.Close()
		select {
		case <-conn.Done():
		case <-ctx.Done():
		}
		return true, conn.Err()
	}, tub.ReconnectOptions{Backoff: tub.Backoff{Initial: 100 * time.Millisecond, Factor: 1, Jitter: -1}})
	r.Run(ctx)
}

// Connect makes a provider, attaches it and closes it when the test ends.
func Connect(t testing.TB, furl tub.Furl, nickname string, answer Answer) (*Provider, *tub.Conn) {
	t.Helper()
	p := New(t, answer)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := p.Attach(ctx, furl, nickname)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return p, conn
}

// AnswerWith answers with s.
func AnswerWith(s stats.Snapshot) Answer {
	return func(call statsrpc.Provider_getStats) error {
		res, err := call.AllocResults()
		if err != nil {
			return err
		}
		st, err := res.NewStats()
		if err != nil {
			return err
		}
		return wire.FromSnapshot(s, st)
	}
}

// Raw answers with no counters and with stats put on the wire as given,
// unchecked, so that a test can send what wire.FromSnapshot never would:
// names is the names blob (each name followed by a NUL byte), n the number
// of values, and set fills in value i.
func Raw(names []byte, n int, set func(i int, v statsrpc.Value)) Answer {
	return func(call statsrpc.Provider_getStats) error {
		res, err := call.AllocResults()
		if err != nil {
			return err
		}
		st, err := res.NewStats()
		if err != nil {
			return err
		}
		if _, err := st.NewCounters(); err != nil {
			return err
		}
		e, err := st.NewStats()
		if err != nil {
			return err
		}
		if err := e.SetNames(names); err != nil {
			return err
		}
		values, err := e.NewValues(int32(n))
		if err != nil {
			return err
		}
		for i := range n {
			set(i, values.At(i))
		}
		return nil
	}
}

// Names joins names into a names blob for Raw.
func Names(names ...string) []byte {
	var b []byte
	for _, n := range names {
		b = append(append(b, n...), 0)
	}
	return b
}

// Fail answers with an error.
func Fail(msg string) Answer {
	return func(statsrpc.Provider_getStats) error { return errors.New(msg) }
}

// SnapshotOf makes a snapshot of n counters and n stats.
func SnapshotOf(n int) stats.Snapshot {
	counters, sts := stats.Map{}, stats.Map{}
	for i := 0; i < n; i++ {
		counters["test.counter_"+strconv.Itoa(i)] = stats.Int(int64(i))
		sts["test.stat_"+strconv.Itoa(i)] = stats.Float(float64(i) / 3)
	}
	return stats.Snapshot{Counters: stats.SetOf(counters), Stats: stats.SetOf(sts)}
}
