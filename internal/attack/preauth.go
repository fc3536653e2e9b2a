package attack

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"

	"capstats/capnp/tub"
	"capstats/capnp/tubrpc"
)

// Dialer opens the attacker's TCP connections from Source (an address of
// this host, such as 127.0.0.2 on Linux's loopback; empty for any), so a
// test can tell the attacker's address from the honest nodes'.
type Dialer struct {
	Source string
}

func (d Dialer) dial(ctx context.Context, addr string) (net.Conn, error) {
	nd := net.Dialer{Timeout: 10 * time.Second}
	if d.Source != "" {
		nd.LocalAddr = &net.TCPAddr{IP: net.ParseIP(d.Source)}
	}
	return nd.DialContext(ctx, "tcp", addr)
}

// selfSigned is a throwaway client certificate: anyone can make one, no
// furl needed.
func selfSigned() (tls.Certificate, error) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "attacker"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// handshake makes a TLS 1.3 connection with cert.
func (d Dialer) handshake(ctx context.Context, addr string, cert tls.Certificate) (*tls.Conn, error) {
	raw, err := d.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(raw, &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // the attacker does not care who answers
		Certificates:       []tls.Certificate{cert},
	})
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, err
	}
	return tc, nil
}

// fetchFrames returns framed Cap'n Proto messages: a Bootstrap (question
// 0) when first is 0, and Tub.fetch calls on it with the swiss numbers
// swissnum returns as questions first+1 to first+n, none of them ever
// finished.
func fetchFrames(first uint32, n int, swissnum func() string) ([]byte, error) {
	var out []byte
	add := func(build func(m rpccp.Message, seg *capnp.Segment) error) error {
		msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
		if err != nil {
			return err
		}
		m, err := rpccp.NewRootMessage(seg)
		if err != nil {
			return err
		}
		if err := build(m, seg); err != nil {
			return err
		}
		b, err := msg.Marshal()
		out = append(out, b...)
		return err
	}
	if first == 0 {
		if err := add(func(m rpccp.Message, _ *capnp.Segment) error {
			b, err := m.NewBootstrap()
			b.SetQuestionId(0)
			return err
		}); err != nil {
			return nil, err
		}
	}
	for q := first + 1; q <= first+uint32(n); q++ {
		if err := add(func(m rpccp.Message, seg *capnp.Segment) error {
			c, err := m.NewCall()
			if err != nil {
				return err
			}
			c.SetQuestionId(q)
			c.SetInterfaceId(tubrpc.Tub_TypeID)
			c.SetMethodId(0)
			tgt, err := c.NewTarget()
			if err != nil {
				return err
			}
			pa, err := tgt.NewPromisedAnswer()
			if err != nil {
				return err
			}
			pa.SetQuestionId(0)
			params, err := c.NewParams()
			if err != nil {
				return err
			}
			args, err := tubrpc.NewTub_fetch_Params(seg)
			if err != nil {
				return err
			}
			if err := args.SetSwissnum(swissnum()); err != nil {
				return err
			}
			return params.SetContent(args.ToPtr())
		}); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// PipelineResult is what one pipelining connection saw.
type PipelineResult struct {
	// Sent is how many fetch calls were written before the connection
	// ended or the attack stopped.
	Sent int
	// Closed says the listener ended the connection, rather than the
	// attack running out of calls or time first.
	Closed bool
}

// PipelineFetches is attack 1: on each of conns connections it writes a
// Bootstrap and then Tub.fetch calls with wrong swiss numbers, pipelined,
// never finishing one and never reading a reply, until it has written
// calls of them, the listener closes the connection, or ctx ends. After the
// last call it waits (until ctx ends) for the listener to close.
func (d Dialer) PipelineFetches(ctx context.Context, addr string, conns, calls int) ([]PipelineResult, error) {
	const batch = 256
	res := make([]PipelineResult, conns)
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cert, err := selfSigned()
			if err != nil {
				errs <- err
				return
			}
			tc, err := d.handshake(ctx, addr, cert)
			if err != nil {
				errs <- err
				return
			}
			defer tc.Close()
			stop := context.AfterFunc(ctx, func() { tc.SetDeadline(time.Now()) })
			defer stop()
			for res[i].Sent < calls {
				chunk, err := fetchFrames(uint32(res[i].Sent), batch, tub.NewSwissnum)
				if err != nil {
					errs <- err
					return
				}
				if _, err := tc.Write(chunk); err != nil {
					res[i].Closed = ctx.Err() == nil
					return
				}
				res[i].Sent += batch
			}
			// Never read a reply: only learn whether the listener hangs up.
			res[i].Closed = closedByPeer(ctx, tc)
		}()
	}
	wg.Wait()
	close(errs)
	return res, errors.Join(collect(errs)...)
}

// closedByPeer waits until the peer closes nc (true) or ctx ends (false).
// It reads and drops what arrives, which a pipelining attacker that never
// reads would not; it is only called once the attack is over.
func closedByPeer(ctx context.Context, nc net.Conn) bool {
	stop := context.AfterFunc(ctx, func() { nc.SetReadDeadline(time.Now()) })
	defer stop()
	io.Copy(io.Discard, nc)
	return ctx.Err() == nil
}

func collect(ch <-chan error) []error {
	var out []error
	for err := range ch {
		out = append(out, err)
	}
	return out
}

// Holder keeps up to N attacking connections open until its context ends,
// opening a new one whenever the listener closes one: attacks 2 and 3.
type Holder struct {
	// Opened counts connections opened (past the TLS handshake for
	// IdleTLS), Closed those the listener ended, Failed the opens that
	// failed (refused, reset, handshake dropped).
	Opened, Closed, Failed atomic.Int64
	open                   atomic.Int64
	// Lifetimes of connections the listener closed, the longest.
	mu      sync.Mutex
	longest time.Duration
	done    chan struct{}
}

// Open returns how many of the holder's connections are open now.
func (h *Holder) Open() int64 { return h.open.Load() }

// Longest returns the longest a connection lived before the listener
// closed it.
func (h *Holder) Longest() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.longest
}

// IdleTLS is attack 2: n connections that complete TLS with a self-signed
// certificate and then send nothing, never fetching.
func (d Dialer) IdleTLS(ctx context.Context, addr string, n int) *Holder {
	cert, err := selfSigned()
	h := &Holder{}
	if err != nil {
		h.Failed.Add(1)
		return h
	}
	return d.hold(ctx, n, h, func(ctx context.Context) (net.Conn, error) {
		return d.handshake(ctx, addr, cert)
	})
}

// SilentSockets is attack 3: n TCP connections that never send a byte
// (no ClientHello).
func (d Dialer) SilentSockets(ctx context.Context, addr string, n int) *Holder {
	return d.hold(ctx, n, &Holder{}, func(ctx context.Context) (net.Conn, error) {
		return d.dial(ctx, addr)
	})
}

// hold runs n workers, each keeping one connection from open up until ctx
// ends. It returns at once; the workers stop when ctx ends. The returned
// Holder's Wait reports when they have.
func (d Dialer) hold(ctx context.Context, n int, h *Holder, open func(context.Context) (net.Conn, error)) *Holder {
	h.done = make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				nc, err := open(ctx)
				if err != nil {
					if ctx.Err() == nil {
						h.Failed.Add(1)
						sleep(ctx, 10*time.Millisecond)
					}
					continue
				}
				h.Opened.Add(1)
				h.open.Add(1)
				start := time.Now()
				if closedByPeer(ctx, nc) {
					h.Closed.Add(1)
					h.mu.Lock()
					h.longest = max(h.longest, time.Since(start))
					h.mu.Unlock()
				}
				h.open.Add(-1)
				nc.Close()
			}
		}()
	}
	go func() { wg.Wait(); close(h.done) }()
	return h
}

// Wait blocks until every worker has stopped (after the context ended).
func (h *Holder) Wait() { <-h.done }

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
