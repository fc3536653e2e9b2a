package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"capstats/capnp/tub"
	"capstats/internal/clock"
)

// Files in a node's base directory.
const (
	// FurlFile holds the gatherer's furl, one line.
	FurlFile = "stats_gatherer.furl"
	// IdentityFile holds the node's key and certificate (mode 0600).
	IdentityFile = "private/node.pem"
)

// Defaults of Config.
const (
	DefaultLivenessTimeout   = 3 * time.Minute
	DefaultFurlCheckInterval = 5 * time.Second
	DefaultDialTimeout       = 30 * time.Second
)

// minLiveness is the least time without a poll that closes a connection,
// however fast the gatherer polls.
const minLiveness = time.Second

// Config configures a Node. BaseDir is required; the zero value of every
// other field is its default.
type Config struct {
	// BaseDir is the node's directory; it must exist.
	BaseDir string
	// Nickname labels the node in the gatherer's output; "" is allowed.
	Nickname string
	// MaxBackoff caps the delay between reconnection attempts;
	// 0 means tub.DefaultMaxBackoff.
	MaxBackoff time.Duration
	// LivenessTimeout is how long an established connection may go
	// without a poll before the node closes it and reconnects, until the
	// node has learned the gatherer's poll interval (after that it is three
	// intervals). 0 means DefaultLivenessTimeout.
	LivenessTimeout time.Duration
	// FurlCheckInterval is how often the furl file's modification time is
	// checked; 0 means DefaultFurlCheckInterval.
	FurlCheckInterval time.Duration
	// DialTimeout bounds one connection attempt including the fetch of the
	// gatherer object; 0 means DefaultDialTimeout.
	DialTimeout time.Duration
	// Logger receives state changes; nil means slog.Default().
	Logger *slog.Logger
	// LoadMonitor makes the node register a LoadMonitor on its Provider
	// and run it from the first time a gatherer is configured until Run
	// returns, as the original node did. Off, the node leaves the
	// Provider's producers to the caller.
	LoadMonitor bool
	// MaxEntries bounds the counters plus stats of one reply to the
	// gatherer; past it the reply is cut, the graphed namespaces kept
	// first, and the number left out reported as node.entries_dropped.
	// 0 means wire.DefaultLimits.MaxEntries, what a gatherer accepts by
	// default.
	MaxEntries int
}

// seams are what tests replace; Open uses the real ones.
type seams struct {
	clock  clock.Clock // nil: the system clock
	dial   dialFunc    // nil: a tub connection
	jitter float64     // the backoff's Jitter; 0: the default
}

// Node keeps a connection to the stats gatherer named in its base
// directory's furl file, offers it the provider on every connection and
// answers its polls. Create it with Open and run it with Run.
type Node struct {
	p       *Provider
	cfg     Config
	log     *slog.Logger
	clock   clock.Clock
	jitter  float64
	topts   tub.Options
	id      *tub.Identity
	furlPth string
	dial    dialFunc

	// target is the mailbox from the furl watcher to the connection loop.
	targetMu  sync.Mutex
	target    *target
	targetGen uint64
	targetCh  chan struct{} // poked when target or targetGen changes

	reloadCh chan struct{}
	furlSig  furlSig // of the furl file when last read

	// modeWarned: the furl file's loose mode could not be tightened, and
	// that was said.
	modeWarned bool

	stateMu sync.Mutex
	state   State

	loadMon *LoadMonitor
	entries *entryCap

	runMu   sync.Mutex
	running bool
}

// target is a parsed furl and the text it was read from.
type target struct {
	text string
	furl tub.Furl
}

// State describes a Node's connection, for status pages and tests.
type State struct {
	// Gatherer is the configured furl with its swiss number hidden, or ""
	// when no gatherer is configured.
	Gatherer string
	// Connected reports an established connection.
	Connected bool
	// Since is when the connection was established or last lost.
	Since time.Time
	// LastPoll is when the gatherer last called getStats.
	LastPoll time.Time
	// LastError says why the last attempt failed or the connection ended.
	LastError string
}

// Open loads (or creates) the node's identity in BaseDir/private/node.pem,
// logs its tub ID, and reads the gatherer furl from BaseDir/stats_gatherer.furl.
// No furl file means no gatherer (said once in the log); a furl file that
// cannot be read or parsed is an error that names it. A furl file that
// other users may read is tightened to mode 0600 with a warning. Open
// starts nothing: Run does.
func Open(p *Provider, cfg Config) (*Node, error) { return open(p, cfg, seams{}) }

func open(p *Provider, cfg Config, sm seams) (*Node, error) {
	if p == nil {
		return nil, errors.New("node: nil Provider")
	}
	if cfg.BaseDir == "" {
		return nil, errors.New("node: no base directory")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LivenessTimeout <= 0 {
		cfg.LivenessTimeout = DefaultLivenessTimeout
	}
	if cfg.FurlCheckInterval <= 0 {
		cfg.FurlCheckInterval = DefaultFurlCheckInterval
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = tub.DefaultMaxBackoff
	}

	fi, err := os.Stat(cfg.BaseDir)
	if err != nil {
		return nil, fmt.Errorf("base directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("base directory %s is not a directory", cfg.BaseDir)
	}
	idPath := filepath.Join(cfg.BaseDir, IdentityFile)
	if err := os.MkdirAll(filepath.Dir(idPath), 0o700); err != nil {
		return nil, fmt.Errorf("node identity: %w", err)
	}
	id, created, err := tub.LoadOrCreateIdentity(idPath)
	if err != nil {
		return nil, fmt.Errorf("node identity %s: %w", idPath, err)
	}

	n := &Node{
		p:        p,
		cfg:      cfg,
		log:      cfg.Logger,
		clock:    clock.Or(sm.clock),
		jitter:   sm.jitter,
		topts:    tub.Options{Logger: cfg.Logger},
		id:       id,
		furlPth:  filepath.Join(cfg.BaseDir, FurlFile),
		dial:     sm.dial,
		entries:  newEntryCap(cfg.MaxEntries),
		targetCh: make(chan struct{}, 1),
		reloadCh: make(chan struct{}, 1),
	}
	if n.dial == nil {
		n.dial = n.dialTub
	}
	if created {
		n.log.Info("created node identity", "tubid", id.TubID(), "file", idPath)
	} else {
		n.log.Info("loaded node identity", "tubid", id.TubID(), "file", idPath)
	}

	// The signature before the read: a change after it is noticed.
	n.furlSig = n.furlSignature()
	t, err := n.readFurl()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		n.log.Info("no stats gatherer configured; running without one", "furl_file", n.furlPth)
	case err != nil:
		return nil, err
	default:
		n.setTarget(t, false)
		n.log.Info("stats gatherer configured", "gatherer", t.furl.Redacted())
	}
	return n, nil
}

// TubID returns the node's tub ID, which the gatherer knows it by.
func (n *Node) TubID() string { return n.id.TubID() }

// FurlPath returns the path of the furl file the node reads.
func (n *Node) FurlPath() string { return n.furlPth }

// State returns the node's connection state.
func (n *Node) State() State {
	n.stateMu.Lock()
	defer n.stateMu.Unlock()
	return n.state
}

// Reload asks the node to re-read its furl file now, as on SIGHUP. A new
// furl replaces the connection; an unchanged one while disconnected makes
// the node retry at once. A malformed file is logged and the current
// gatherer kept. Reload does not wait.
func (n *Node) Reload() {
	select {
	case n.reloadCh <- struct{}{}:
	default:
	}
}

// readFurl reads and parses the furl file. A missing file gives an error
// matching fs.ErrNotExist; every other error names the file.
func (n *Node) readFurl() (*target, error) {
	f, err := os.Open(n.furlPth)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("gatherer furl file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFurlFile+1))
	if err != nil {
		return nil, fmt.Errorf("gatherer furl file: %w", err)
	}
	if len(b) > maxFurlFile {
		return nil, fmt.Errorf("gatherer furl file %s: longer than %d bytes", n.furlPth, maxFurlFile)
	}
	text := strings.TrimSpace(string(b))
	if text == "" {
		return nil, fmt.Errorf("gatherer furl file %s: empty", n.furlPth)
	}
	if strings.ContainsAny(text, "\r\n") {
		return nil, fmt.Errorf("gatherer furl file %s: more than one line", n.furlPth)
	}
	fu, err := tub.ParseFurl(text)
	if err != nil {
		return nil, fmt.Errorf("gatherer furl file %s: %w", n.furlPth, err)
	}
	n.guardFurl(f)
	return &target{text: text, furl: fu}, nil
}

// maxFurlFile bounds the furl file read: a furl is a line of a few hundred
// bytes.
const maxFurlFile = 64 << 10

// guardFurl tightens the furl file to 0600 when other users may read or
// write it: the furl is the authority to report to the gatherer, but
// `echo FURL > stats_gatherer.furl`, the documented way to attach a node,
// makes a file of mode 0644 under the usual umask. A file the node does not
// own, or cannot change, is used anyway, with a warning said once.
func (n *Node) guardFurl(f *os.File) {
	fi, err := f.Stat()
	if err != nil || fi.Mode().Perm()&0o077 == 0 {
		n.modeWarned = false
		return
	}
	mode := fmt.Sprintf("%#o", fi.Mode().Perm())
	err = errors.New("owned by another user")
	if ownedByMe(fi) {
		err = f.Chmod(0o600)
	}
	if err == nil {
		n.modeWarned = false
		n.log.Warn("furl file was open to other users; tightened it to 0600", "furl_file", n.furlPth, "mode", mode)
		return
	}
	if !n.modeWarned {
		n.modeWarned = true
		n.log.Warn("furl file is open to other users and cannot be tightened; using it anyway",
			"furl_file", n.furlPth, "mode", mode, "err", err)
	}
}

// setTarget hands a new target (nil: none) to the connection loop; kick
// with an unchanged target asks for an immediate retry.
func (n *Node) setTarget(t *target, kick bool) {
	n.targetMu.Lock()
	n.target = t
	if kick {
		n.targetGen++
	}
	n.targetMu.Unlock()
	select {
	case n.targetCh <- struct{}{}:
	default:
	}
	n.stateMu.Lock()
	if t == nil {
		n.state.Gatherer = ""
	} else {
		n.state.Gatherer = t.furl.Redacted()
	}
	n.stateMu.Unlock()
}

func (n *Node) currentTarget() (*target, uint64) {
	n.targetMu.Lock()
	defer n.targetMu.Unlock()
	return n.target, n.targetGen
}

// Run keeps the node connected to its gatherer, following changes of the
// furl file, until ctx is done; then it closes the connection, waits for
// everything it started and returns ctx.Err(). Run may be called once: a
// second call returns an error at once.
func (n *Node) Run(ctx context.Context) error {
	n.runMu.Lock()
	if n.running {
		n.runMu.Unlock()
		return errors.New("node: Run called twice")
	}
	n.running = true
	n.runMu.Unlock()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.watchFurl(ctx)
	}()
	n.connectLoop(ctx)
	wg.Wait()
	if n.loadMon != nil {
		n.loadMon.Stop()
	}
	return ctx.Err()
}

// watchFurl re-reads the furl file on Reload and when its modification
// time or size changes.
func (n *Node) watchFurl(ctx context.Context) {
	last := n.furlSig
	for {
		t := n.clock.NewTimer(n.cfg.FurlCheckInterval)
		explicit := false
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-n.reloadCh:
			t.Stop()
			explicit = true
		case <-t.C():
		}
		sig := n.furlSignature()
		if sig.equal(last) && !explicit {
			continue
		}
		last = sig
		n.reread(explicit)
	}
}

// furlSig identifies a version of the furl file: its modification time,
// size and identity (a file renamed into place is another file even within
// one tick of a coarse clock).
type furlSig struct {
	fi  os.FileInfo // nil: no file
	err string
}

func (a furlSig) equal(b furlSig) bool {
	if a.fi == nil || b.fi == nil {
		return a.fi == nil && b.fi == nil && a.err == b.err
	}
	return os.SameFile(a.fi, b.fi) && a.fi.ModTime().Equal(b.fi.ModTime()) && a.fi.Size() == b.fi.Size()
}

func (n *Node) furlSignature() furlSig {
	fi, err := os.Stat(n.furlPth)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return furlSig{}
	case err != nil:
		return furlSig{err: err.Error()}
	}
	return furlSig{fi: fi}
}

// reread applies the furl file's current content.
func (n *Node) reread(explicit bool) {
	cur, _ := n.currentTarget()
	t, err := n.readFurl()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if cur != nil {
			n.log.Info("furl file removed; running without a stats gatherer", "furl_file", n.furlPth)
			n.setTarget(nil, false)
		}
	case err != nil:
		if cur != nil {
			n.log.Error("cannot use the new furl file; keeping the current gatherer", "err", err)
		} else {
			n.log.Error("cannot use the furl file", "err", err)
		}
	case cur != nil && cur.text == t.text:
		if explicit {
			n.log.Info("furl unchanged", "gatherer", t.furl.Redacted())
			n.setTarget(cur, true)
		}
	default:
		n.log.Info("stats gatherer furl changed", "gatherer", t.furl.Redacted())
		n.setTarget(t, false)
	}
}
