package tub

import (
	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/rpc/transport"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// newTransport is go-capnp's stream transport over cd, except that each
// outgoing message is built in one segment that grows as needed. The stock
// transport starts a message in a 1 KiB segment and adds a segment each
// time one fills, so a 50-entry getStats reply spanned three segments, and
// every name that landed in another segment than its entry cost a far
// pointer to write and another to follow on the gatherer's side.
func newTransport(cd *codec) transport.Transport {
	return &singleSegmentTransport{Transport: transport.New(cd), cd: cd}
}

// singleSegmentTransport receives and closes as the stock transport does.
type singleSegmentTransport struct {
	transport.Transport
	cd *codec
}

func (t *singleSegmentTransport) NewMessage() (transport.OutgoingMessage, error) {
	_, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		return nil, err
	}
	m, err := rpccp.NewRootMessage(seg)
	if err != nil {
		return nil, err
	}
	return &outgoingMessage{msg: m, cd: t.cd}, nil
}

// outgoingMessage follows transport.OutgoingMessage's contract: Release is
// idempotent and Send after Release panics.
type outgoingMessage struct {
	msg      rpccp.Message
	cd       *codec
	released bool
}

func (o *outgoingMessage) Message() rpccp.Message { return o.msg }

// Send writes the message, except for the Finish that go-capnp sends a
// quarter of a second after each call returns: that one waits for the next
// message on the connection, or heldFinishDelay when none comes. A Finish
// alone cost the gatherer a TLS record and a write per poll, and the node a
// wake-up to read it; holding it only keeps the node's copy of the answer
// until the next call. A Finish that
// cancels a call (releaseResultCaps set, sent the moment the call's context
// ends) goes out at once.
func (o *outgoingMessage) Send() error {
	if o.released {
		panic("tub: Send after Release")
	}
	if o.msg.Which() == rpccp.Message_Which_finish {
		if fin, err := o.msg.Finish(); err == nil && !fin.ReleaseResultCaps() {
			return o.cd.hold(o.msg.Message())
		}
	}
	return o.cd.Encode(o.msg.Message())
}

func (o *outgoingMessage) Release() {
	if o.released {
		return
	}
	o.released = true
	o.msg.Message().Release()
}
