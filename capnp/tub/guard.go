package tub

import (
	"errors"
	"sync/atomic"

	"capnproto.org/go/capnp/v3/rpc/transport"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// Errors that end a connection whose peer went over a per-connection bound.
var (
	errTooManyCalls = errors.New("peer has too many calls in flight")
	errTooMuchHeld  = errors.New("peer's messages hold too much memory")
	errSendBacklog  = errors.New("peer does not read what it is sent")
)

// guardEnded are the endings of go-capnp's messages about a connection
// the guard ended. The listener has counted it and warned, rate-limited;
// go-capnp would warn once per connection, as often as an attacker likes.
var guardEnded = []string{
	errTooManyCalls.Error(), errTooMuchHeld.Error(), errSendBacklog.Error(), errMessageTooLarge.Error(),
}

// guardTransport bounds what one peer can make this side hold: calls it has
// made that are not answered yet (queued or running), the bytes of the
// messages it sent that are still in use, and the messages held for it:
// answers it has not finished (each keeps its Return until the peer's
// Finish, which go-capnp sends a quarter of a second after the answer) and
// messages queued while it does not read. Going over any of them ends the
// connection; queuing would only move the memory elsewhere.
type guardTransport struct {
	transport.Transport
	cd       *codec // the codec under Transport, whose messages take from its budget
	maxCalls int
	maxHeld  int64
	maxOut   int64
	exceeded func(reason string, err error) // called once, before the error ends the connection

	calls atomic.Int64 // received calls and bootstraps less Returns sent
	held  atomic.Int64
	out   atomic.Int64
	over  atomic.Bool
}

func (g *guardTransport) fail(reason string, err error) error {
	if g.over.CompareAndSwap(false, true) && g.exceeded != nil {
		g.exceeded(reason, err)
	}
	return err
}

func (g *guardTransport) RecvMessage() (transport.IncomingMessage, error) {
	in, err := g.Transport.RecvMessage()
	taken := g.cd.takeTaken()
	if err != nil {
		g.cd.budget.give(g.cd.share, taken)
		if errors.Is(err, errMessageTooLarge) {
			g.fail(ReasonMessageSize, err)
		}
		return in, err
	}
	m := in.Message()
	switch m.Which() {
	case rpccp.Message_Which_call, rpccp.Message_Which_bootstrap:
		if g.calls.Add(1) > int64(g.maxCalls) {
			in.Release()
			g.cd.budget.give(g.cd.share, taken)
			return nil, g.fail(ReasonCallsInFlight, errTooManyCalls)
		}
	}
	size, _ := m.Message().TotalSize()
	if g.held.Add(int64(size)) > g.maxHeld {
		g.held.Add(-int64(size))
		in.Release()
		g.cd.budget.give(g.cd.share, taken)
		return nil, g.fail(ReasonHeldBytes, errTooMuchHeld)
	}
	return &guardedIn{IncomingMessage: in, g: g, size: int64(size), taken: taken}, nil
}

// NewMessage never refuses for the backlog: go-capnp does not expect a
// failure here everywhere (it takes a method value of the message before
// checking the error). exceeded closes the connection instead, and the RPC
// system then drops its queue.
func (g *guardTransport) NewMessage() (transport.OutgoingMessage, error) {
	if g.out.Add(1) > g.maxOut {
		g.fail(ReasonSendBacklog, errSendBacklog)
	}
	m, err := g.Transport.NewMessage()
	if err != nil {
		g.out.Add(-1)
		return nil, err
	}
	return &guardedOut{OutgoingMessage: m, g: g}, nil
}

// guardedIn gives its bytes back to the connection's count and the
// listener's budget on Release.
type guardedIn struct {
	transport.IncomingMessage
	g        *guardTransport
	size     int64
	taken    int64 // from the listener's budget
	released atomic.Bool
}

func (m *guardedIn) Release() {
	first := m.released.CompareAndSwap(false, true)
	m.IncomingMessage.Release()
	if first {
		m.g.held.Add(-m.size)
		m.g.cd.budget.give(m.g.cd.share, m.taken)
	}
}

// guardedOut counts as queued until it is released, which the RPC system
// does once it is written (and, for a Return, once the peer finished it).
type guardedOut struct {
	transport.OutgoingMessage
	g        *guardTransport
	released atomic.Bool
}

// Send counts a Return as the end of a call in flight: go-capnp sends
// exactly one for each call and bootstrap it received.
func (m *guardedOut) Send() error {
	if m.Message().Which() == rpccp.Message_Which_return {
		m.g.calls.Add(-1)
	}
	return m.OutgoingMessage.Send()
}

func (m *guardedOut) Release() {
	if m.released.CompareAndSwap(false, true) {
		m.g.out.Add(-1)
	}
	m.OutgoingMessage.Release()
}
