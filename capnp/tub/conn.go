package tub

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/rpc"
	"golang.org/x/sync/semaphore"
)

// rpcLogger passes go-capnp's messages to slog one level down, and the
// ones that only say a connection ended, which the RPC system reports as
// errors, down to debug: the tub logs connections itself, and a warning
// should mean something is wrong.
type rpcLogger struct{ l *slog.Logger }

func (r rpcLogger) Debug(msg string, args ...any) { r.l.Debug(msg, args...) }
func (r rpcLogger) Info(msg string, args ...any)  { r.l.Debug(msg, args...) }
func (r rpcLogger) Warn(msg string, args ...any) {
	r.l.Log(context.Background(), r.level(msg, slog.LevelInfo), msg, args...)
}
func (r rpcLogger) Error(msg string, args ...any) {
	r.l.Log(context.Background(), r.level(msg, slog.LevelWarn), msg, args...)
}

// connectionEnded are the endings of go-capnp's messages about a
// connection closing in the ordinary way.
var connectionEnded = []string{
	"connection closed", "context canceled", "EOF", "use of closed network connection",
	"connection reset by peer", "broken pipe",
}

func (r rpcLogger) level(msg string, otherwise slog.Level) slog.Level {
	for _, end := range guardEnded {
		if strings.HasSuffix(msg, end) {
			return slog.LevelDebug
		}
	}
	for _, end := range connectionEnded {
		if strings.HasSuffix(msg, end) {
			return slog.LevelDebug
		}
	}
	return otherwise
}

// codec frames Cap'n Proto messages over a TLS stream and caps the size of
// reads. Writes go through a pooled buffer, so that one message is one TLS
// record without a write buffer per connection; reads need no buffer of
// their own, as the TLS connection already buffers a whole record. (A read
// and a write buffer per connection were most of a gatherer's memory per
// node: BENCHMARKS.md, first pass, fix 1.)
type codec struct {
	readErr atomic.Pointer[error]

	nc net.Conn
	// maxSize bounds an incoming message. limit, when set, replaces it
	// from the next message on (a listener raises it once the peer has
	// fetched an object): Decode waits for a message's first byte before
	// it reads limit, since the reader is already waiting for the message
	// after a fetch while the fetch is being served.
	maxSize uint64
	limit   atomic.Uint64
	// ahead is the part of a message's frame header read so far: in word
	// for a message of one segment, in long for more.
	ahead []byte
	word  [8]byte
	long  []byte

	// budget, on a listener's connection, is shared with all its other
	// connections: Decode takes a message's size from it before the body
	// is read (waiting, if it is spent, until readCtx ends), and the
	// transport gives it back when the message is released. Only once the
	// peer has fetched an object: before, its messages are bounded by the
	// small pre-fetch limit and the fetch timeout, and letting them take
	// from the budget would let a peer without the furl keep nodes waiting.
	fetched bool
	budget  *byteBudget
	share   *semaphore.Weighted // the source address's part of budget
	readCtx context.Context
	// taken is what the message being read, or the one Decode returned
	// last, took from budget.
	taken atomic.Int64
	// reading is when the message being read began arriving (budget.now),
	// not counting a wait for the budget; zero between messages. The
	// listener's sweeper closes a connection whose message takes too long.
	reading atomic.Int64

	// held is a framed Finish message that waits to go out with the next
	// message (see outgoingMessage.Send), or alone once it has waited
	// holdFor, when flush fires.
	mu      sync.Mutex
	held    []byte
	holdFor time.Duration
	flush   *time.Timer
	closed  bool

	closeOnce sync.Once
	onClose   func() // run once the transport is closed; may be nil
}

func newCodec(nc net.Conn, maxSize uint64) *codec {
	return &codec{nc: nc, maxSize: maxSize, holdFor: heldFinishDelay}
}

// errMessageTooLarge ends a connection whose peer announced a message
// over the limit.
var errMessageTooLarge = errors.New("message too large")

// maxFrameSegmentID is the highest segment ID a frame may have, as in
// go-capnp's own decoder.
const maxFrameSegmentID = 512

// readAhead reads until n bytes of the frame header are in ahead.
func (c *codec) readAhead(n int) error {
	have := len(c.ahead)
	if have >= n {
		return nil
	}
	if cap(c.ahead) < n {
		if cap(c.long) < n {
			c.long = make([]byte, n)
		}
		c.ahead = c.long[:copy(c.long[:n], c.ahead)]
	}
	m, err := io.ReadFull(c.nc, c.ahead[have:n])
	c.ahead = c.ahead[:have+m]
	return err
}

// readHeader reads the rest of a message's frame header and returns the
// size of the whole message it announces.
func (c *codec) readHeader(limit uint64) (uint64, error) {
	if err := c.readAhead(8); err != nil {
		return 0, err
	}
	maxID := uint64(binary.LittleEndian.Uint32(c.ahead))
	if maxID > maxFrameSegmentID {
		return 0, fmt.Errorf("frame of %d segments: %w", maxID+1, errMessageTooLarge)
	}
	segs := maxID + 1
	size := (4*(segs+1) + 7) &^ 7 // the header, padded to a word
	if err := c.readAhead(int(size)); err != nil {
		return 0, err
	}
	for i := range segs {
		size += 8 * uint64(binary.LittleEndian.Uint32(c.ahead[4+4*i:]))
	}
	if size > limit {
		return 0, fmt.Errorf("%d bytes, limit is %d: %w", size, limit, errMessageTooLarge)
	}
	return size, nil
}

// Decode reads one message. It frames messages itself, rather than with
// capnp.Decoder, to know a message's size (and on a listener take it from
// the budget) before its body is read, and so that a released message's
// buffer goes to the garbage collector: go-capnp's decoder puts it in a
// buffer pool, where released buffers would hold as much again as the
// budget allows.
func (c *codec) Decode() (*capnp.Message, error) {
	if len(c.ahead) == 0 {
		c.ahead = c.word[:1]
		if _, err := io.ReadFull(c.nc, c.ahead); err != nil {
			c.ahead = nil
			return nil, c.fail(err)
		}
	}
	if n := c.limit.Load(); n != 0 {
		c.maxSize, c.fetched = n, true
	}
	if c.budget != nil {
		c.reading.Store(c.budget.now())
	}
	size, err := c.readHeader(c.maxSize)
	if err != nil {
		return nil, c.fail(err)
	}
	if c.budget != nil && c.fetched {
		if !c.budget.take(c.readCtx, c.share, int64(size), func() { c.reading.Store(0) }) {
			return nil, c.fail(net.ErrClosed)
		}
		c.taken.Store(int64(size))
		c.reading.Store(c.budget.now())
	}
	buf := make([]byte, size)
	n := copy(buf, c.ahead)
	c.ahead = nil
	_, err = io.ReadFull(c.nc, buf[n:])
	if c.budget != nil {
		c.reading.Store(0)
	}
	if err != nil {
		return nil, c.fail(err)
	}
	m, err := capnp.Unmarshal(buf)
	if err != nil {
		return nil, c.fail(err)
	}
	m.TraverseLimit = c.maxSize * 2
	return m, nil
}

// fail records why reading stopped, and gives back what the message took
// from the budget.
func (c *codec) fail(err error) error {
	c.reading.Store(0)
	c.budget.give(c.share, c.takeTaken())
	c.readErr.CompareAndSwap(nil, &err)
	return err
}

// takeTaken hands over what the message Decode returned last took from the
// budget; the transport's reader calls it right after Decode.
func (c *codec) takeTaken() int64 { return c.taken.Swap(0) }

// heldFinishDelay is how long a held Finish waits for the next message
// before it is written alone, so that an idle connection does not keep the
// peer's answer indefinitely. Connections polled in quick succession, for
// which the hold saves a write per call, send their next call sooner; at the
// default poll interval the Finish goes out alone, a write a minute.
const heldFinishDelay = time.Second

// msgWriter is a write buffer and an encoder writing into it, lent to one
// Encode at a time.
type msgWriter struct {
	bw  *bufio.Writer
	enc *capnp.Encoder
}

var msgWriters = sync.Pool{New: func() any {
	bw := bufio.NewWriterSize(nil, 16<<10)
	return &msgWriter{bw: bw, enc: capnp.NewEncoder(bw)}
}}

func (c *codec) Encode(m *capnp.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := msgWriters.Get().(*msgWriter)
	w.bw.Reset(c.nc)
	_, err := w.bw.Write(c.held)
	if len(c.held) > 0 {
		c.held = c.held[:0]
		c.flush.Stop()
	}
	if err == nil {
		err = w.enc.Encode(m)
	}
	if err == nil {
		err = w.bw.Flush()
	}
	w.bw.Reset(nil)
	msgWriters.Put(w)
	return err
}

// hold frames m to be written in front of the next message Encode writes.
func (c *codec) hold(m *capnp.Message) error {
	b, err := m.Marshal()
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil // nothing will be written any more
	}
	first := len(c.held) == 0
	c.held = append(c.held, b...)
	if first {
		if c.flush == nil {
			c.flush = time.AfterFunc(c.holdFor, c.flushHeld)
		} else {
			c.flush.Reset(c.holdFor)
		}
	}
	return nil
}

// flushHeld writes the held messages when no other message has taken them
// along in time.
func (c *codec) flushHeld() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || len(c.held) == 0 {
		return
	}
	_, err := c.nc.Write(c.held)
	c.held = c.held[:0]
	if err != nil {
		// Nobody is waiting for this write to report its error, and a
		// frame cut short would garble what follows: end the connection,
		// so that its reader stops and the RPC connection closes.
		c.nc.Close()
	}
}

// Close is called by the RPC connection once, as it ends, whichever side
// ended it; it then runs onClose.
func (c *codec) Close() error {
	// The connection is closed before taking the lock, so that a write
	// blocked on a peer that does not read returns and lets go of it.
	err := c.nc.Close()
	c.mu.Lock()
	c.closed = true
	if c.flush != nil {
		c.flush.Stop()
	}
	c.mu.Unlock()
	c.closeOnce.Do(func() {
		if c.onClose != nil {
			c.onClose()
		}
	})
	return err
}

// err returns why reading stopped, if it has.
func (c *codec) err() error {
	if p := c.readErr.Load(); p != nil {
		return *p
	}
	return nil
}

// peerTubID returns the tub ID of the certificate a peer presented.
func peerTubID(rawCerts [][]byte) (string, error) {
	if len(rawCerts) == 0 {
		return "", errors.New("peer presented no certificate")
	}
	cert, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return "", fmt.Errorf("peer certificate: %w", err)
	}
	return TubIDOf(cert), nil
}

// TubIDMismatchError means the server at a hint is not the tub the furl
// names: someone else answered at that address.
type TubIDMismatchError struct{ Want, Got, Addr string }

func (e *TubIDMismatchError) Error() string {
	return fmt.Sprintf("tub ID mismatch at %s: furl wants %s, server is %s", e.Addr, e.Want, e.Got)
}

// Conn is an established connection to a remote tub, with the object that
// the furl named.
type Conn struct {
	rpc    *rpc.Conn
	codec  *codec
	nc     net.Conn
	obj    capnp.Client
	remote string
}

// Object returns the capability the furl named. The Conn owns it: AddRef
// it to keep it past Close.
func (c *Conn) Object() capnp.Client { return c.obj }

// RemoteTubID returns the authenticated tub ID of the server.
func (c *Conn) RemoteTubID() string { return c.remote }

// RemoteAddr returns the address that answered.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// Done is closed when the connection ends, from either side.
func (c *Conn) Done() <-chan struct{} { return c.rpc.Done() }

// Err says why the connection ended when it ended on a read error (a reset,
// a message over the size limit); nil while it is up or after a clean close.
func (c *Conn) Err() error { return readErr(c.codec) }

// Close ends the connection and releases the object.
func (c *Conn) Close() error {
	c.obj.Release()
	err := c.rpc.Close()
	c.nc.Close()
	<-c.rpc.Done()
	return err
}

// Dial connects to the tub a furl names, trying its hints in order, proves
// its own identity, checks the server's against the furl's tub ID before any
// Cap'n Proto traffic, and fetches the object by its swiss number. bootstrap
// (which may be the zero Client) is offered to the server as this side's
// bootstrap capability; Dial takes ownership of it.
func Dial(ctx context.Context, f Furl, id *Identity, bootstrap capnp.Client, opts Options) (*Conn, error) {
	if len(f.Hints) == 0 {
		bootstrap.Release()
		return nil, errNoHints
	}
	var errs []error
	for _, addr := range f.Hints {
		nc, err := dialTLS(ctx, addr, f.TubID, id, opts)
		if err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		c, err := fetch(ctx, newCodec(nc, opts.maxMessageSize()), f, bootstrap.AddRef(), opts)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		bootstrap.Release()
		return c, nil
	}
	bootstrap.Release()
	return nil, errors.Join(errs...)
}

func dialTLS(ctx context.Context, addr, wantTubID string, id *Identity, opts Options) (*tls.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, opts.handshakeTimeout())
	defer cancel()
	var mismatch *TubIDMismatchError
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{id.tlsCertificate()},
		InsecureSkipVerify: true, // the tub ID pin below is the verification
		ServerName:         "capstats",
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			got, err := peerTubID(raw)
			if err != nil {
				return err
			}
			if got != wantTubID {
				mismatch = &TubIDMismatchError{Want: wantTubID, Got: got, Addr: addr}
				return mismatch
			}
			return nil
		},
	}
	d := &tls.Dialer{Config: cfg}
	if opts.LocalAddr != "" {
		d.NetDialer = &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(opts.LocalAddr)}}
	}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if mismatch != nil {
			return nil, mismatch
		}
		return nil, fmt.Errorf("connect %s: %w", addr, err)
	}
	return nc.(*tls.Conn), nil
}

func fetch(ctx context.Context, cd *codec, f Furl, bootstrap capnp.Client, opts Options) (*Conn, error) {
	nc := cd.nc
	conn := rpc.NewConn(newTransport(cd), &rpc.Options{
		BootstrapClient: bootstrap,
		Logger:          rpcLogger{opts.logger()},
	})
	t := tubClient(conn.Bootstrap(ctx))
	defer t.Release()
	fut, release := t.Fetch(ctx, func(p tubFetchParams) error { return p.SetSwissnum(f.Swissnum) })
	defer release()
	res, err := fut.Struct()
	if err != nil {
		conn.Close()
		nc.Close()
		return nil, fmt.Errorf("fetch object from %s: %w", nc.RemoteAddr(), err)
	}
	return &Conn{rpc: conn, codec: cd, nc: nc, obj: res.Object().AddRef(), remote: f.TubID}, nil
}
