package attack

// node.go holds the attacks of a furl holder (issue 14, attacks 4 to 9):
// every node's basedir holds the gatherer's furl, so a furl holder is a
// node, not an administrator. Each attacker is an identity of its own
// that provides a scripted fakenode.Provider, dialling from Source.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"capnproto.org/go/capnp/v3"

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
