package attack

// node.go holds the attacks of a furl holder (issue 14, attacks 4 to 9,
// and stalled messages):
// every node's basedir holds the gatherer's furl, so a furl holder is a
// node, not an administrator. Each attacker is an identity of its own
// that provides a scripted fakenode.Provider, dialling from Source.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	"capstats/capnp/statsrpc"
	"capstats/capnp/tub"
	"capstats/internal/fakenode"
)

// Provide dials furl from d.Source as p's identity and calls provide with
// nickname, waiting for the reply. The caller closes the Conn.
func (d Dialer) Provide(ctx context.Context, furl tub.Furl, p *fakenode.Provider, nickname string) (*tub.Conn, error) {
	conn, err := tub.Dial(ctx, furl, p.ID, capnp.Client{}, tub.Options{LocalAddr: d.Source})
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
		return nil, &RefusedError{err}
	}
	return conn, nil
}

// RefusedError is a provide the gatherer answered with an exception (the
// connection was made).
type RefusedError struct{ Err error }

func (e *RefusedError) Error() string { return "provide refused: " + e.Err.Error() }
func (e *RefusedError) Unwrap() error { return e.Err }

// Identities is the outcome of Flood.
type Identities struct {
	Accepted, Refused int
	// FirstRefusal is why the first refused provide was refused.
	FirstRefusal error
	// Conns are the accepted ones still connected (Flood with stay).
	Conns []*tub.Conn
	// Providers are the accepted ones, in order.
	Providers []*fakenode.Provider
}

// Close closes every connection Flood kept.
func (r *Identities) Close() {
	for _, c := range r.Conns {
		c.Close()
	}
}

// Flood makes n new identities, one after the other, each providing once
// with nickname and answer. With stay, accepted ones stay connected;
// without, each disconnects once its provide is answered. A provide the
// gatherer refuses is counted, not an error; a dial failure is.
func (d Dialer) Flood(ctx context.Context, t testing.TB, furl tub.Furl, n int, nickname string, answer fakenode.Answer, stay bool) (*Identities, error) {
	r := &Identities{}
	for i := range n {
		p := fakenode.New(t, answer)
		conn, err := d.Provide(ctx, furl, p, nickname)
		var refused *RefusedError
		switch {
		case err == nil:
			r.Accepted++
			r.Providers = append(r.Providers, p)
			if stay {
				r.Conns = append(r.Conns, conn)
			} else {
				conn.Close()
				<-conn.Done()
			}
		case errors.As(err, &refused):
			r.Refused++
			if r.FirstRefusal == nil {
				r.FirstRefusal = err
			}
		default:
			return r, fmt.Errorf("identity %d: %w", i, err)
		}
	}
	return r, nil
}

// CollidingPair returns two identities whose tub IDs share their first four
// characters, the part of a munin field name taken from the tub ID. It
// makes identities until two collide: about 1,300 for 32^4 prefixes (the
// birthday bound), up to max.
func CollidingPair(max int) (*tub.Identity, *tub.Identity, error) {
	seen := make(map[string]*tub.Identity, max)
	for range max {
		id, err := tub.NewIdentity()
		if err != nil {
			return nil, nil, err
		}
		p := id.TubID()[:4]
		if other, ok := seen[p]; ok {
			return other, id, nil
		}
		seen[p] = id
	}
	return nil, nil, fmt.Errorf("no two of %d tub IDs share their first 4 characters", max)
}

// BigReply answers getStats with a message of about size bytes: n stats
// whose names are each nameLen bytes long. Names over the gatherer's
// limit (256 bytes) make it refuse the reply, but only after the message
// has arrived whole, which is what the attack is about.
func BigReply(size, nameLen int) fakenode.Answer {
	n := max(size/(nameLen+1+16), 1)
	var names []byte
	name := strings.Repeat("b", nameLen-6)
	for i := range n {
		names = fmt.Appendf(names, "%s%06d\x00", name, i)
	}
	return fakenode.Raw(names, n, func(i int, v statsrpc.Value) { v.SetInt(int64(i)) })
}

// StalledMessages keeps n connections that each fetch furl's object, which
// lifts the listener's message limit, and then send the frame header of a
// message of size bytes and all of it but its last byte, which never
// comes. The first n connections all fetch before any of them sends its
// message. A reader that allocated for a message when its header arrived
// would hold size bytes for every such connection for as long as it is
// open. A connection the listener closes is replaced by a new one.
func (d Dialer) StalledMessages(ctx context.Context, furl tub.Furl, n, size int) *Holder {
	cert, err := selfSigned()
	h := &Holder{}
	if err != nil {
		h.Failed.Add(1)
		return h
	}
	var started atomic.Int64
	var ready sync.WaitGroup
	ready.Add(n)
	return d.hold(ctx, n, h, func(ctx context.Context) (net.Conn, error) {
		first := started.Add(1) <= int64(n)
		tc, err := d.handshake(ctx, furl.Hints[0], cert)
		if err == nil {
			if err = fetchObject(tc, furl.Swissnum); err != nil {
				tc.Close()
			}
		}
		if first {
			ready.Done()
			ready.Wait()
		}
		if err != nil {
			return nil, err
		}
		msg := make([]byte, size-1)
		binary.LittleEndian.PutUint32(msg[4:], uint32(size/8-1)) // one segment, after the 8-byte header
		go tc.Write(msg)                                         // blocks while the listener does not read; ends when it closes
		return tc, nil
	})
}

// fetchObject fetches swissnum over tc by hand and waits for the answer,
// after which the listener allows messages of its full size.
func fetchObject(tc net.Conn, swissnum string) error {
	frames, err := fetchFrames(0, 1, func() string { return swissnum })
	if err != nil {
		return err
	}
	if _, err := tc.Write(frames); err != nil {
		return err
	}
	tc.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer tc.SetReadDeadline(time.Time{})
	dec := capnp.NewDecoder(tc)
	for {
		m, err := dec.Decode()
		if err != nil {
			return fmt.Errorf("waiting for the fetch's answer: %w", err)
		}
		rm, err := rpccp.ReadRootMessage(m)
		if err != nil {
			return err
		}
		if rm.Which() != rpccp.Message_Which_return {
			continue
		}
		ret, err := rm.Return()
		if err != nil {
			return err
		}
		if ret.AnswerId() != 1 {
			continue
		}
		if ret.Which() != rpccp.Return_Which_results {
			return errors.New("fetch refused")
		}
		return nil
	}
}
