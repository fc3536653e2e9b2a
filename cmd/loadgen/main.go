// Command loadgen opens many provider connections from one process to a
// capstats gatherer, for benchmarks: each connection has its own tub
// identity (so the gatherer sees one node per connection) and answers
// getStats with a fixed set of counters and stats, the counters growing by
// one per call.
//
//	loadgen -furl capnp://... -n 1000 [-concurrency 64 | -storm] [-reconnect 100ms] [-sources 64]
//
// It prints progress lines on stdout, which the benchmark harness in
// capstats/bench reads:
//
//	loadgen: identities n=1000 seconds=0.081
//	loadgen: dialing n=1000 concurrency=64 at=1700000000123456789
//	loadgen: ready connected=1000 failed=0 seconds=0.912
//	loadgen: exit calls=3000 pings=0 connects=1000 dial_failures=0
//
// "ready" comes once every provider has connected once or given up. With
// -reconnect, a provider whose connection ends dials again after that delay
// (as a node does when its gatherer restarts). SIGTERM or SIGINT closes every
// connection and exits 0; so does reaching -lifetime.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"capnproto.org/go/capnp/v3"

	"capstats/bench"
	"capstats/capnp/statsrpc"
	"capstats/capnp/tub"
	"capstats/stats"
	"capstats/wire"
)

// maxEntries is the gatherer's limit on entries in one reply.
var maxEntries = wire.DefaultLimits.MaxEntries

type config struct {
	furl        tub.Furl
	n           int
	concurrency int
	storm       bool
	counters    int
	stats       int
	reconnect   time.Duration
	attempts    int
	lifetime    time.Duration
	nickname    string
	handshake   time.Duration
	sources     int
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	raiseNofile(cfg.n + 64)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, cfg.lifetime)
	defer cancel()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	var c config
	furl := fs.String("furl", "", "the gatherer's furl (capnp://...)")
	furlFile := fs.String("furl-file", "", "read the furl from this file (e.g. a gatherer's stats_gatherer.furl)")
	fs.IntVar(&c.n, "n", 100, "number of provider connections, each with its own identity")
	fs.IntVar(&c.concurrency, "concurrency", 64, "most connections dialing (TCP + TLS + provide) at once")
	fs.BoolVar(&c.storm, "storm", false, "dial all connections at once (concurrency = n): the handshake storm")
	fs.IntVar(&c.counters, "counters", 20, "counters per provider")
	fs.IntVar(&c.stats, "stats", 20, "stats per provider")
	fs.DurationVar(&c.reconnect, "reconnect", 0, "dial again this long after a connection ends or a dial fails (0: never)")
	fs.IntVar(&c.attempts, "attempts", 10, "dial attempts per provider before it gives up, counted afresh after each established connection")
	fs.DurationVar(&c.lifetime, "lifetime", 2*time.Hour, "exit after this long in any case")
	fs.StringVar(&c.nickname, "nickname", "loadgen", "nickname prefix; provider i is PREFIX-i")
	fs.DurationVar(&c.handshake, "handshake-timeout", 10*time.Second, "bound on TCP connect plus TLS handshake")
	fs.IntVar(&c.sources, "sources", 0, "dial from this many loopback source addresses, 127.0.0.1 up, provider i from the (i mod N)th (0: any address; the gatherer must be on loopback)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	s := *furl
	if *furlFile != "" {
		if s != "" {
			return c, errors.New("give -furl or -furl-file, not both")
		}
		b, err := os.ReadFile(*furlFile)
		if err != nil {
			return c, err
		}
		s = strings.TrimSpace(string(b))
	}
	if s == "" {
		return c, errors.New("-furl or -furl-file is required")
	}
	f, err := tub.ParseFurl(s)
	if err != nil {
		return c, err
	}
	c.furl = f
	switch {
	case c.n < 1:
		return c, errors.New("-n must be at least 1")
	case c.counters < 0 || c.stats < 0 || c.counters+c.stats > maxEntries:
		return c, fmt.Errorf("-counters and -stats must be >= 0 and add up to at most %d", maxEntries)
	case c.attempts < 1:
		return c, errors.New("-attempts must be at least 1")
	case c.lifetime <= 0:
		return c, errors.New("-lifetime must be positive")
	case c.sources < 0 || c.sources > 250:
		return c, errors.New("-sources must be between 0 and 250")
	}
	if c.storm || c.concurrency <= 0 || c.concurrency > c.n {
		c.concurrency = c.n
	}
	return c, nil
}

// provider is one simulated node.
type provider struct {
	index int
	id    *tub.Identity
	nick  string
	snap  stats.Snapshot
	// counters are snap's counters, which each call adds one to.
	counters stats.Map
	calls    int64 // guarded by go-capnp: calls to one server run one at a time
	total    *counters
}

type counters struct {
	calls, pings, connects, dialFailures, gaveUp atomic.Int64
}

// GetStats answers with the provider's snapshot, every counter one higher
// than last time.
func (p *provider) GetStats(_ context.Context, call statsrpc.Provider_getStats) error {
	p.calls++
	p.total.calls.Add(1)
	for name, v := range p.counters {
		p.counters[name] = stats.Int(v.Int() + 1)
	}
	p.snap.Counters = stats.SetLike(p.counters, p.snap.Counters)
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	st, err := res.NewStats()
	if err != nil {
		return err
	}
	return wire.FromSnapshot(p.snap, st)
}

// Ping does nothing.
func (p *provider) Ping(context.Context, statsrpc.Provider_ping) error {
	p.total.pings.Add(1)
	return nil
}

// newIdentities makes n identities on every core.
func newIdentities(n int) ([]*tub.Identity, error) {
	ids := make([]*tub.Identity, n)
	var next atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || firstErr.Load() != nil {
					return
				}
				id, err := tub.NewIdentity()
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				ids[i] = id
			}
		}()
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return nil, *p
	}
	return ids, nil
}

func run(ctx context.Context, cfg config) error {
	start := time.Now()
	ids, err := newIdentities(cfg.n)
	if err != nil {
		return fmt.Errorf("identities: %w", err)
	}
	fmt.Printf("loadgen: identities n=%d seconds=%.3f\n", cfg.n, time.Since(start).Seconds())

	total := &counters{}
	opts := tub.Options{Logger: slog.New(slog.DiscardHandler), HandshakeTimeout: cfg.handshake}
	sem := make(chan struct{}, cfg.concurrency)
	errs := &errLog{max: 5}
	var settled sync.WaitGroup // each provider: connected once, or gave up
	var wg sync.WaitGroup
	settled.Add(cfg.n)
	dialStart := time.Now()
	fmt.Printf("loadgen: dialing n=%d concurrency=%d at=%d\n", cfg.n, cfg.concurrency, dialStart.UnixNano())
	for i, id := range ids {
		p := &provider{
			index: i, id: id, total: total,
			nick: fmt.Sprintf("%s-%d", cfg.nickname, i),
			snap: bench.Snapshot(i, cfg.counters, cfg.stats),
		}
		p.counters = p.snap.Counters.Map()
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.loop(ctx, cfg, opts, sem, settled.Done, errs)
		}()
	}
	readyDone := make(chan struct{})
	go func() { settled.Wait(); close(readyDone) }()
	select {
	case <-readyDone:
		fmt.Printf("loadgen: ready connected=%d failed=%d seconds=%.3f\n",
			total.connects.Load(), total.gaveUp.Load(), time.Since(dialStart).Seconds())
	case <-ctx.Done():
	}
	<-ctx.Done()

	// Every provider closes its connection on ctx; do not hang on a stuck one.
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	select {
	case <-allDone:
	case <-time.After(15 * time.Second):
		fmt.Fprintln(os.Stderr, "loadgen: some connections did not close within 15s; exiting anyway")
	}
	fmt.Printf("loadgen: exit calls=%d pings=%d connects=%d dial_failures=%d gave_up=%d\n",
		total.calls.Load(), total.pings.Load(), total.connects.Load(), total.dialFailures.Load(), total.gaveUp.Load())
	return nil
}

// loop dials, provides, waits for the connection to end, and with
// -reconnect dials again, until ctx ends or the attempts run out.
func (p *provider) loop(ctx context.Context, cfg config, opts tub.Options, sem chan struct{}, settle func(), errs *errLog) {
	settleOnce := sync.OnceFunc(settle)
	defer settleOnce()
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	delay := max(cfg.reconnect, 50*time.Millisecond)
	r := tub.NewReconnector(func(ctx context.Context) (bool, error) {
		conn, err := p.connect(ctx, cfg, opts, sem)
		if err != nil {
			if ctx.Err() == nil {
				p.total.dialFailures.Add(1)
				errs.log(p.nick, err)
			}
			return false, err
		}
		defer conn.Close()
		p.total.connects.Add(1)
		settleOnce()
		select {
		case <-conn.Done():
			if cfg.reconnect <= 0 {
				stop() // one connection, not redialled
			}
		case <-ctx.Done():
		}
		return true, conn.Err()
	}, tub.ReconnectOptions{
		// A failed dial is retried, after at least 50ms, even without
		// -reconnect.
		Backoff:     tub.Backoff{Initial: delay, Max: delay, Factor: 1, Jitter: -1},
		MaxFailures: cfg.attempts,
	})
	if err := r.Run(ctx); errors.Is(err, tub.ErrGaveUp) {
		p.total.gaveUp.Add(1)
	}
}

// connect dials the gatherer and calls provide, holding a slot of sem
// while it does.
func (p *provider) connect(ctx context.Context, cfg config, opts tub.Options, sem chan struct{}) (*tub.Conn, error) {
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-sem }()
	dctx, cancel := context.WithTimeout(ctx, cfg.handshake+10*time.Second)
	defer cancel()
	if cfg.sources > 0 {
		opts.LocalAddr = fmt.Sprintf("127.0.0.%d", 1+p.index%cfg.sources)
	}
	conn, err := tub.Dial(dctx, cfg.furl, p.id, capnp.Client{}, opts)
	if err != nil {
		return nil, err
	}
	fut, release := statsrpc.Gatherer(conn.Object()).Provide(dctx, func(a statsrpc.Gatherer_provide_Params) error {
		if err := a.SetNickname(p.nick); err != nil {
			return err
		}
		return a.SetProvider(statsrpc.Provider_ServerToClient(p))
	})
	_, err = fut.Struct()
	release()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("provide: %w", err)
	}
	return conn, nil
}

// errLog prints the first few dial errors, then only counts them.
type errLog struct {
	max int
	n   atomic.Int64
}

func (e *errLog) log(nick string, err error) {
	n := e.n.Add(1)
	if n <= int64(e.max) {
		fmt.Fprintf(os.Stderr, "loadgen: %s: %v\n", nick, err)
	}
	if n == int64(e.max) {
		fmt.Fprintln(os.Stderr, "loadgen: further dial errors are only counted")
	}
}
