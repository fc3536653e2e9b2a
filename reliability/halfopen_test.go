package reliability

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"capstats/capnp/tub"
	"capstats/gatherer"
	"capstats/internal/testutil"
	"capstats/node"
)

// freezer is a TCP proxy that can stop forwarding in both directions
// without closing anything: to both ends the peer has simply gone silent,
// as when a cable is pulled or a NAT forgets the flow.
type freezer struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	frozen bool
	thaw   chan struct{}
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newFreezer(t *testing.T, target string) *freezer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target, thaw: make(chan struct{})}
	close(f.thaw)
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(f.close)
	return f
}

func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.frozen {
		f.frozen = true
		f.thaw = make(chan struct{})
	}
}

func (f *freezer) unfreeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.frozen {
		f.frozen = false
		close(f.thaw)
	}
}

// gate blocks while the proxy is frozen.
func (f *freezer) gate() {
	f.mu.Lock()
	ch := f.thaw
	f.mu.Unlock()
	<-ch
}

func (f *freezer) track(c net.Conn) {
	f.mu.Lock()
	f.conns = append(f.conns, c)
	f.mu.Unlock()
}

func (f *freezer) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.track(c)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.gate() // a connection made while frozen goes nowhere yet
			up, err := net.Dial("tcp", f.target)
			if err != nil {
				c.Close()
				return
			}
			f.track(up)
			f.wg.Add(2)
			go f.pipe(up, c)
			go f.pipe(c, up)
		}()
	}
}

// pipe copies src to dst, holding each chunk while frozen, and forwards
// a close only when not frozen.
func (f *freezer) pipe(dst, src net.Conn) {
	defer f.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		f.gate()
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				src.Close()
			}
			dst.Close()
			return
		}
	}
}

func (f *freezer) close() {
	f.ln.Close()
	f.unfreeze()
	f.mu.Lock()
	for _, c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// TestHalfOpenPeer puts a proxy between a node and the gatherer and makes
// it go silent. The gatherer must give up on the node within three poll
// timeouts, the node must notice that polls stopped and reconnect, and
// once the proxy forwards again the node is back.
func TestHalfOpenPeer(t *testing.T) {
	if testing.Short() {
		t.Skip("several poll intervals of a frozen connection")
	}
	dir := filepath.Join(t.TempDir(), "g")
	if err := gatherer.Create(dir, gatherer.CreateOptions{Hostname: "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	const interval = 500 * time.Millisecond
	d, err := gatherer.Start(dir, gatherer.Config{Interval: interval, Timeout: 300 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}, tub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stopRun := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { d.Run(runCtx); close(runDone) }()
	defer func() { stopRun(); <-runDone; d.Close() }()

	proxy := newFreezer(t, d.Listener.Addr().String())
	viaProxy := tub.Furl{TubID: d.Furl.TubID, Hints: []string{proxy.ln.Addr().String()}, Swissnum: d.Furl.Swissnum}
	nodeDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(nodeDir, "stats_gatherer.furl"), []byte(viaProxy.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := node.NewProvider(node.ProviderOptions{})
	n, err := node.Open(p, node.Config{
		BaseDir: nodeDir, Nickname: "behind-proxy",
		MaxBackoff: time.Second, DialTimeout: 2 * time.Second,
		LivenessTimeout: 3 * time.Second,
		Logger:          slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	nodeCtx, stopNode := context.WithCancel(context.Background())
	nodeDone := make(chan struct{})
	go func() { n.Run(nodeCtx); close(nodeDone) }()
	defer func() { stopNode(); <-nodeDone }()

	up := func() (bool, float64) {
		for _, e := range d.Gatherer().File().Nodes {
			if e.TubID == n.TubID() {
				return e.Up, e.Timestamp
			}
		}
		return false, 0
	}
	testutil.WaitFor(t, "node polled through the proxy", 20*time.Second, func() bool {
		u, ts := up()
		return u && ts > 0 && n.State().Connected
	})
	// Let the node learn the poll interval.
	time.Sleep(4 * interval)

	proxy.freeze()
	frozeAt := time.Now()
	testutil.WaitFor(t, "gatherer gives up on the silent node", 20*time.Second, func() bool {
		u, _ := up()
		return !u
	})
	t.Logf("gatherer marked the node down %s after the freeze", time.Since(frozeAt).Round(time.Millisecond))
	testutil.WaitFor(t, "node notices polls stopped", 20*time.Second, func() bool { return !n.State().Connected })
	t.Logf("node noticed %s after the freeze", time.Since(frozeAt).Round(time.Millisecond))

	proxy.unfreeze()
	thawedAt := time.Now()
	testutil.WaitFor(t, "node back after the proxy forwards again", 30*time.Second, func() bool {
		u, ts := up()
		return u && ts > float64(thawedAt.UnixNano())/1e9
	})
	t.Logf("node back %s after the thaw", time.Since(thawedAt).Round(time.Millisecond))
}
