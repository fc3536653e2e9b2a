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

func (o *outgoingMessage) Send() error {
	if o.released {
		panic("tub: Send after Release")
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
