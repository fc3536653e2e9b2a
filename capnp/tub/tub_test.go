package tub

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"capstats/capnp/statsrpc"
)

// pinger is a Provider whose ping records who called it.
type pinger struct {
	mu      sync.Mutex
	callers []string
}

func (p *pinger) GetStats(ctx context.Context, call statsrpc.Provider_getStats) error { return nil }

func (p *pinger) Ping(ctx context.Context, call statsrpc.Provider_ping) error {
	peer, ok := PeerFromContext(ctx)
	if !ok {
		return errors.New("no peer in context")
	}
	p.mu.Lock()
	p.callers = append(p.callers, peer.TubID)
	p.mu.Unlock()
	return nil
}

func newID(t testing.TB) *Identity {
	t.Helper()
	id, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func listen(t testing.TB, opts Options) (*Listener, *pinger, Furl) {
	t.Helper()
	l, err := Listen("127.0.0.1:0", newID(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	p := &pinger{}
	f := l.Register(capnp.Client(statsrpc.Provider_ServerToClient(p)))
	return l, p, f
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func ping(ctx context.Context, c capnp.Client) error {
	fut, rel := statsrpc.Provider(c).Ping(ctx, nil)
	defer rel()
	_, err := fut.Struct()
	return err
}

func TestFetchAndCallSeesClientTubID(t *testing.T) {
	_, p, f := listen(t, Options{})
	client := newID(t)
	ctx := ctxT(t)
	conn, err := Dial(ctx, f, client, capnp.Client{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if conn.RemoteTubID() != f.TubID {
		t.Errorf("RemoteTubID = %s, want %s", conn.RemoteTubID(), f.TubID)
	}
	if err := ping(ctx, conn.Object()); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.callers) != 1 || p.callers[0] != client.TubID() {
		t.Fatalf("server saw callers %v, want [%s]", p.callers, client.TubID())
	}
}

func TestDialTriesHintsInOrder(t *testing.T) {
	_, _, f := listen(t, Options{})
	// A closed port first: the dialer must move on to the next hint.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	f.Hints = append([]string{deadAddr}, f.Hints...)
	conn, err := Dial(ctxT(t), f, newID(t), capnp.Client{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
}

func TestWrongTubIDFailsHandshake(t *testing.T) {
	_, p, f := listen(t, Options{})
	f.TubID = newID(t).TubID()
	_, err := Dial(ctxT(t), f, newID(t), capnp.Client{}, Options{})
	var mm *TubIDMismatchError
	if !errors.As(err, &mm) {
		t.Fatalf("Dial with wrong tub ID: err = %v, want TubIDMismatchError", err)
	}
	if !strings.Contains(err.Error(), "tub ID mismatch") {
		t.Errorf("error %q does not say tub ID mismatch", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.callers) != 0 {
		t.Fatal("object was called despite the mismatch")
	}
}

func TestWrongSwissnumNotEchoed(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	l, _, f := listen(t, Options{Logger: logger})
	// Every guess is refused and counted, however long the guesses take
	// on a busy machine: each has a bound of its own to give up by.
	const guesses = 200
	start := time.Now()
	for i := 0; i < guesses; i++ {
		f.Swissnum = NewSwissnum()
		_, err := Dial(ctxT(t), f, newID(t), capnp.Client{}, Options{})
		if err == nil {
			t.Fatal("Dial with a wrong swiss number succeeded")
		}
		if strings.Contains(err.Error(), f.Swissnum) {
			t.Fatalf("error echoes the swiss number: %v", err)
		}
		if !strings.Contains(err.Error(), "no object with that swiss number") {
			t.Fatalf("guess %d: error %q does not explain", i, err)
		}
	}
	took := time.Since(start)
	if n := l.UnknownSwissnums(); n != guesses {
		t.Errorf("UnknownSwissnums = %d, want %d", n, guesses)
	}
	mu.Lock()
	defer mu.Unlock()
	// Rate-limited to a line per ten seconds, however many guesses.
	maxLines := 1 + int(took/(10*time.Second))
	if n := strings.Count(logs.String(), "unknown swiss number"); n < 1 || n > maxLines {
		t.Errorf("%d warning lines for %d guesses in %s, want 1 to %d", n, guesses, took, maxLines)
	}
	if strings.Contains(logs.String(), f.Swissnum) {
		t.Error("log contains a guessed swiss number")
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// expectRefused checks that the listener closes nc without serving it.
func expectRefused(t *testing.T, nc net.Conn, what string) {
	t.Helper()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	_, werr := nc.Write(make([]byte, 64))
	_, rerr := io.ReadAll(nc)
	if werr == nil && rerr == nil {
		// ReadAll returned on EOF: the server closed on us, which is the refusal.
		return
	}
	var ne net.Error
	if errors.As(rerr, &ne) && ne.Timeout() {
		t.Fatalf("%s: connection still open after 10s", what)
	}
}

func TestClientWithoutCertificateRefused(t *testing.T) {
	l, p, _ := listen(t, Options{})
	nc, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	if err == nil {
		expectRefused(t, nc, "client without certificate")
		nc.Close()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.callers) != 0 {
		t.Fatal("served a client without a certificate")
	}
}

func TestTLS12ClientRefused(t *testing.T) {
	l, _, _ := listen(t, Options{})
	id := newID(t)
	_, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{
		InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12,
		Certificates: []tls.Certificate{id.tlsCertificate()},
	})
	if err == nil {
		t.Fatal("a TLS 1.2 client completed a handshake")
	}
}

func TestGarbageAndSlowlorisFreed(t *testing.T) {
	l, _, f := listen(t, Options{HandshakeTimeout: 300 * time.Millisecond})
	base := runtime.NumGoroutine()
	garbage, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer garbage.Close()
	garbage.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	expectRefused(t, garbage, "plain TCP garbage")

	var idle []net.Conn
	for i := 0; i < 20; i++ {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	for _, c := range idle {
		expectRefused(t, c, "client that never handshakes")
		c.Close()
	}
	// Still serving real clients afterwards.
	conn, err := Dial(ctxT(t), f, newID(t), capnp.Client{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	waitGoroutines(t, base)
}

func TestChurnLeavesNoGoroutines(t *testing.T) {
	_, p, f := listen(t, Options{})
	ctx := ctxT(t)
	client := newID(t)
	// Warm up once so lazily started runtime goroutines are in the baseline.
	conn, err := Dial(ctx, f, client, capnp.Client{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	base := runtime.NumGoroutine()
	for i := 0; i < 200; i++ {
		conn, err := Dial(ctx, f, client, capnp.Client{}, Options{})
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		if err := ping(ctx, conn.Object()); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		conn.Close()
	}
	waitGoroutines(t, base)
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.callers) != 200 {
		t.Fatalf("%d calls served, want 200", len(p.callers))
	}
}

// waitGoroutines waits, within a bound, for the goroutine count to return
// to base (a small margin for the runtime's own).
func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= base+2 {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d, baseline %d\n%s", n, base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// connectedPeer dials a fresh listener and returns both ends of the
// connection: the server's Peer (caught in a call) and the client's Conn.
func connectedPeer(t *testing.T) (*Peer, *Conn) {
	t.Helper()
	l, err := Listen("127.0.0.1:0", newID(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	peers := make(chan *Peer, 1)
	f := l.Register(capnp.Client(statsrpc.Provider_ServerToClient(peerCatcher(peers))))
	conn, err := Dial(ctxT(t), f, newID(t), capnp.Client{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := ping(ctxT(t), conn.Object()); err != nil {
		t.Fatal(err)
	}
	return <-peers, conn
}

func TestServerSeesDisconnect(t *testing.T) {
	peer, conn := connectedPeer(t)
	conn.Close()
	select {
	case <-peer.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("server did not see the disconnect")
	}
}

type peerCatcher chan *Peer

func (p peerCatcher) GetStats(ctx context.Context, call statsrpc.Provider_getStats) error { return nil }
func (p peerCatcher) Ping(ctx context.Context, call statsrpc.Provider_ping) error {
	peer, _ := PeerFromContext(ctx)
	select {
	case p <- peer:
	default:
	}
	return nil
}

func TestPeerCloseEndsClientConn(t *testing.T) {
	peer, conn := connectedPeer(t)
	peer.Close()
	select {
	case <-conn.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("client did not see the server close the connection")
	}
}

func TestIdentitySaveLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "private", "node.pem")
	os.MkdirAll(filepath.Dir(path), 0o700)
	id, created, err := LoadOrCreateIdentity(path)
	if err != nil || !created {
		t.Fatalf("create: %v created=%v", err, created)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %o, want 600", fi.Mode().Perm())
	}
	again, created, err := LoadOrCreateIdentity(path)
	if err != nil || created {
		t.Fatalf("load: %v created=%v", err, created)
	}
	if again.TubID() != id.TubID() || len(id.TubID()) != 32 || !isBase32ID(id.TubID()) {
		t.Fatalf("tub IDs %q and %q", id.TubID(), again.TubID())
	}
	os.Chmod(path, 0o644)
	_, err = LoadIdentity(path)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("loading a world-readable key: err = %v, want one naming %s", err, path)
	}
	os.Chmod(path, 0o600)
	os.WriteFile(path, []byte("not a key"), 0o600)
	if _, err := LoadIdentity(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("loading garbage: err = %v", err)
	}
}

func TestTubIDIsSPKIHash(t *testing.T) {
	id := newID(t)
	again, err := parseIdentity(mustPEM(t, id))
	if err != nil {
		t.Fatal(err)
	}
	if again.TubID() != id.TubID() {
		t.Fatal("tub ID changed across a PEM round trip")
	}
	// A re-issued certificate over the same key keeps the tub ID.
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "other"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, id.key.Public(), id.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	if TubIDOf(cert) != id.TubID() {
		t.Fatal("re-issued certificate changed the tub ID")
	}
	if TubIDOf(newID(t).cert) == id.TubID() {
		t.Fatal("two keys share a tub ID")
	}
}

func mustPEM(t *testing.T, id *Identity) []byte {
	b, err := id.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRPCLoggerQuietOnOrdinaryEnds(t *testing.T) {
	var buf bytes.Buffer
	r := rpcLogger{slog.New(slog.NewTextHandler(&buf, nil))}
	r.Error("rpc: remote abort: connection closed")
	r.Error("rpc: send release: send message: context canceled")
	r.Error("rpc: receive: EOF")
	if buf.Len() != 0 {
		t.Errorf("ordinary connection ends logged at info or above:\n%s", buf.String())
	}
	r.Error("rpc: incoming call: unknown question ID")
	if !strings.Contains(buf.String(), "level=WARN") {
		t.Errorf("a protocol error was not logged as a warning:\n%s", buf.String())
	}
}

func TestUnregisterRefusesLaterFetches(t *testing.T) {
	l, _, old := listen(t, Options{})
	ctx := ctxT(t)
	held, err := Dial(ctx, old, newID(t), capnp.Client{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	fresh := l.Register(capnp.Client(statsrpc.Provider_ServerToClient(&pinger{})))
	if !l.Unregister(old.Swissnum) {
		t.Fatal("Unregister of an exported swiss number reported false")
	}
	if l.Unregister(old.Swissnum) {
		t.Error("second Unregister reported true")
	}
	if _, err := Dial(ctx, old, newID(t), capnp.Client{}, Options{}); err == nil || !strings.Contains(err.Error(), "no object with that swiss number") {
		t.Fatalf("fetch of the withdrawn swiss number: err = %v, want a refusal", err)
	}
	conn, err := Dial(ctx, fresh, newID(t), capnp.Client{}, Options{})
	if err != nil {
		t.Fatalf("the other export stopped working: %v", err)
	}
	conn.Close()
	// What a connection fetched before stays usable until the exporter ends it.
	if err := ping(ctx, held.Object()); err != nil {
		t.Errorf("an earlier fetch stopped working: %v", err)
	}
}
