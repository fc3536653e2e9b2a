package node

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"capstats/capnp/statsrpc"
	"capstats/capnp/tub"
	"capstats/stats"
	"capstats/wire"
)

// testGatherer is the least of a gatherer, over a real tub on loopback: it
// records provide calls and, if asked, polls each provider.
type testGatherer struct {
	t         *testing.T
	id        *tub.Identity
	swissnum  string
	addr      string
	pollEvery time.Duration

	mu       sync.Mutex
	ln       *tub.Listener
	provides chan provided
	wg       sync.WaitGroup
}

type provided struct {
	tubID, nickname string
	prov            statsrpc.Provider
	peer            *tub.Peer
}

func newTestGatherer(t *testing.T, pollEvery time.Duration) *testGatherer {
	id, err := tub.NewIdentity()
	must(t, err)
	g := &testGatherer{t: t, id: id, swissnum: tub.NewSwissnum(), addr: "127.0.0.1:0",
		pollEvery: pollEvery, provides: make(chan provided, 64)}
	g.start()
	t.Cleanup(g.stop)
	return g
}

func (g *testGatherer) start() {
	ln, err := tub.Listen(g.addr, g.id, tub.Options{Logger: quietLogger()})
	must(g.t, err)
	g.addr = ln.Addr().String()
	_, err = ln.RegisterAs(g.swissnum, capnp.Client(statsrpc.Gatherer_ServerToClient(gathererServer{g})))
	must(g.t, err)
	g.mu.Lock()
	g.ln = ln
	g.mu.Unlock()
}

func (g *testGatherer) stop() {
	g.mu.Lock()
	ln := g.ln
	g.ln = nil
	g.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	g.wg.Wait()
}

func (g *testGatherer) furl() string {
	return tub.Furl{TubID: g.id.TubID(), Hints: []string{g.addr}, Swissnum: g.swissnum}.String()
}

func (g *testGatherer) furlVia(addr string) string {
	return tub.Furl{TubID: g.id.TubID(), Hints: []string{addr}, Swissnum: g.swissnum}.String()
}

type gathererServer struct{ g *testGatherer }

func (s gathererServer) Provide(ctx context.Context, call statsrpc.Gatherer_provide) error {
	peer, ok := tub.PeerFromContext(ctx)
	if !ok {
		return errors.New("unauthenticated")
	}
	nick, err := call.Args().Nickname()
	if err != nil {
		return err
	}
	p := provided{tubID: peer.TubID, nickname: nick, prov: call.Args().Provider().AddRef(), peer: peer}
	if s.g.pollEvery > 0 {
		s.g.wg.Add(1)
		go s.g.pollLoop(p.prov.AddRef(), peer)
	}
	select {
	case s.g.provides <- p:
	default:
		p.prov.Release()
	}
	return nil
}

// pollLoop polls every pollEvery until the connection ends; each call
// times out after five intervals.
func (g *testGatherer) pollLoop(prov statsrpc.Provider, peer *tub.Peer) {
	defer g.wg.Done()
	defer prov.Release()
	for {
		select {
		case <-peer.Done():
			return
		case <-time.After(g.pollEvery):
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*g.pollEvery)
		fut, release := prov.GetStats(ctx, nil)
		_, _ = fut.Struct()
		release()
		cancel()
	}
}

func (g *testGatherer) nextProvide(t *testing.T, within time.Duration) provided {
	t.Helper()
	select {
	case p := <-g.provides:
		t.Cleanup(p.prov.Release)
		return p
	case <-time.After(within):
		t.Fatalf("no provide within %v", within)
		return provided{}
	}
}

func getStats(t *testing.T, prov statsrpc.Provider) stats.Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fut, release := prov.GetStats(ctx, nil)
	defer release()
	res, err := fut.Struct()
	must(t, err)
	st, err := res.Stats()
	must(t, err)
	snap, err := new(wire.Decoder).ToSnapshot(st, wire.DefaultLimits)
	must(t, err)
	return snap
}

// runRealNode runs a node over real TLS with the system clock.
func runRealNode(t *testing.T, dir string, p *Provider, tweak func(*Config)) (*Node, func()) {
	t.Helper()
	log, logs := bufLogger(slog.LevelDebug)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node log:\n%s", logs.String())
		}
	})
	cfg := Config{
		BaseDir: dir, Nickname: "e2e", Logger: log,
		FurlCheckInterval: 20 * time.Millisecond, MaxBackoff: 2 * time.Second,
		LoadMonitor: true,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	n, err := Open(p, cfg)
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := n.Run(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	}()
	stop := func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return within 10 s")
		}
	}
	return n, stop
}

// waitGoroutines waits up to 5 s for the goroutine count to come back to
// base (plus a little for the runtime's own).
func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base+2 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d, baseline %d\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEndToEndOverTub(t *testing.T) {
	base := runtime.NumGoroutine()
	dir := t.TempDir()
	p := NewProvider(ProviderOptions{Logger: quietLogger()})
	stopBuiltins := RegisterBuiltins(p)
	p.Count("storage_server.allocate", 3)
	n, stop := runRealNode(t, dir, p, nil)

	// No furl yet. Writing one into the running node's basedir is enough.
	g := newTestGatherer(t, 0)
	writeFurl(t, dir, g.furl())
	pr := g.nextProvide(t, 5*time.Second)
	if pr.tubID != n.TubID() || pr.nickname != "e2e" {
		t.Fatalf("provide from %q nickname %q; want %q, \"e2e\"", pr.tubID, pr.nickname, n.TubID())
	}
	p.Count("storage_server.allocate", 4)
	snap := getStats(t, pr.prov)
	if snap.Counters.Map()["storage_server.allocate"] != stats.Int(7) || snap.Counters.Map()[ProducerErrorsCounter] != stats.Int(0) {
		t.Fatalf("counters %v", snap.Counters)
	}
	for _, k := range []string{"node.uptime", "cpu_monitor.total", "go.goroutines", "load_monitor.avg_load"} {
		if _, ok := snap.Stats.Map()[k]; !ok {
			t.Errorf("stat %s missing from %v", k, snap.Stats)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	fut, release := pr.prov.Ping(ctx, nil)
	_, err := fut.Struct()
	release()
	cancel()
	must(t, err)
	waitFor(t, "connected state with a poll", func() bool {
		s := n.State()
		return s.Connected && !s.LastPoll.IsZero()
	})

	// The gatherer goes away and comes back on the same address with the
	// same identity and swiss number: the node is back by itself.
	g.stop()
	waitFor(t, "disconnected state", func() bool { return !n.State().Connected })
	start := time.Now()
	g.start()
	pr = g.nextProvide(t, 60*time.Second) // a bound to give up by, not a speed target
	t.Logf("node back %v after the gatherer came back", time.Since(start).Round(time.Millisecond))
	if snap := getStats(t, pr.prov); snap.Counters.Map()["storage_server.allocate"] != stats.Int(7) {
		t.Fatalf("after reconnecting: %v", snap.Counters)
	}

	stop()
	stopBuiltins()
	g.stop()
	waitGoroutines(t, base)
}

// stallProxy forwards TCP to a target until stalled; stalled, it stops
// forwarding in both directions without closing anything, like a peer
// that vanished without a FIN.
type stallProxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	stalled bool
	resume  chan struct{}
	conns   []net.Conn
	wg      sync.WaitGroup
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	p := &stallProxy{ln: ln, target: target, resume: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *stallProxy) addr() string { return p.ln.Addr().String() }

func (p *stallProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, u)
		go p.pipe(u, c)
	}
}

func (p *stallProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.waitUnstalled()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
			}
			return
		}
	}
}

func (p *stallProxy) waitUnstalled() {
	p.mu.Lock()
	stalled, resume := p.stalled, p.resume
	p.mu.Unlock()
	if stalled {
		<-resume
	}
}

func (p *stallProxy) stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stalled = true
}

func (p *stallProxy) unstall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stalled = false
	close(p.resume)
	p.resume = make(chan struct{})
}

func (p *stallProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	if p.stalled {
		p.stalled = false
		close(p.resume)
		p.resume = make(chan struct{})
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// Issue 9, point 4, node side: a path that stops forwarding without a FIN
// is noticed by the node's liveness check (no poll for three intervals),
// and the node reconnects once the path forwards again.
func TestHalfOpenPathReconnects(t *testing.T) {
	if testing.Short() {
		t.Skip("takes a few seconds")
	}
	base := runtime.NumGoroutine()
	dir := t.TempDir()
	g := newTestGatherer(t, 100*time.Millisecond)
	proxy := newStallProxy(t, g.addr)
	writeFurl(t, dir, g.furlVia(proxy.addr()))
	p := NewProvider(ProviderOptions{Logger: quietLogger()})
	log, logs := bufLogger(slog.LevelDebug)
	n, stop := runRealNode(t, dir, p, func(c *Config) {
		c.Logger = log
		c.DialTimeout = 2 * time.Second
	})
	first := g.nextProvide(t, 5*time.Second)
	waitFor(t, "a few polls", func() bool { return time.Since(n.State().LastPoll) < 50*time.Millisecond })
	time.Sleep(500 * time.Millisecond) // the node learns the 100 ms interval

	proxy.stall()
	stalledAt := time.Now()
	waitFor(t, "the node to drop the silent connection", func() bool { return !n.State().Connected })
	// The liveness check is what noticed (the log line below), not a
	// timing: TCP alone would not notice for minutes.
	t.Logf("node noticed the silent path after %v", time.Since(stalledAt).Round(time.Millisecond))
	time.Sleep(time.Second) // an attempt or two through the stalled path fail
	proxy.unstall()
	second := g.nextProvide(t, 15*time.Second)
	if second.tubID != first.tubID {
		t.Fatalf("reconnected as %s, was %s", second.tubID, first.tubID)
	}
	waitFor(t, "polls on the new connection", func() bool { return n.State().Connected })
	if !strings.Contains(logs.String(), "no poll from stats gatherer") {
		t.Errorf("liveness close not logged:\n%s", logs.String())
	}
	stop()
	proxy.close()
	g.stop()
	waitGoroutines(t, base)
}
