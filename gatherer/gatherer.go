// Package gatherer is the stats gatherer: it accepts providers from nodes,
// polls every one of them on a timer, and writes the latest sample of each
// to stats.json once per round.
package gatherer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3"

	"capstats/capnp/statsrpc"
	"capstats/capnp/tub"
	"capstats/stats"
	"capstats/statsfile"
	"capstats/wire"
)

// Config is what a Gatherer needs besides its listener.
type Config struct {
	// StatsFile is the path of stats.json.
	StatsFile string
	// Interval between poll rounds. Default 60s.
	Interval time.Duration
	// Timeout of one getStats call. Default: the smaller of 30s and Interval.
	Timeout time.Duration
	// WriteAfter bounds how long a round waits for slow nodes before it
	// writes the file; answers that come later go into the next write, so a
	// hung node never holds back the others. Default: the smaller of 5s and
	// Timeout.
	WriteAfter time.Duration
	// MaxTimeouts is how many timeouts in a row close a node's connection:
	// a peer that vanished without a FIN is otherwise never noticed.
	// Default 3.
	MaxTimeouts int
	// Limits bound what a node's reply may hold.
	Limits wire.Limits
	// MaxNodes caps the node entries kept: a new identity beyond it
	// replaces the node down longest, and is refused when all are up.
	// Default DefaultMaxNodes.
	MaxNodes int
	// ForgetAfter, when positive, drops the entries of nodes down that
	// long. Default 0: kept for ever, as the original did.
	ForgetAfter time.Duration
	// NewNodeBurst and NewNodeEvery rate-limit new identities per source
	// address: a bucket of NewNodeBurst, refilled by one every
	// NewNodeEvery. Defaults DefaultNewNodeBurst, DefaultNewNodeEvery.
	NewNodeBurst int
	NewNodeEvery time.Duration
	// Logger gets operational logs. Default: slog.Default(), as for every
	// capstats library, so that a program that sets up slog sees them.
	Logger *slog.Logger
	// Verbose, when set, gets the original's connect/disconnect lines and a
	// line per round.
	Verbose io.Writer
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// OnForget, when set, is called with the tub ID of a node removed
	// from the gatherer (by Forget, ForgetAfter or a node cap), to drop
	// what OnPoll kept of it. It runs under the gatherer's lock: it must
	// not block nor call the Gatherer.
	OnForget func(tubID string)
	// StartGrace bounds how long Run waits, after a restart, for the nodes
	// that were up before it to answer before the first round. Default: the
	// smaller of 10s and Interval.
	StartGrace time.Duration
	// OnPoll, when set, is called after each successful poll with the
	// node's new sample (for in-memory history). It must not block.
	OnPoll func(tubID string, at time.Time, snap stats.Snapshot)
}

func (c *Config) setDefaults() {
	if c.Interval <= 0 {
		c.Interval = 60 * time.Second
	}
	if c.Timeout <= 0 {
		c.Timeout = min(30*time.Second, c.Interval)
	}
	if c.WriteAfter <= 0 {
		c.WriteAfter = min(5*time.Second, c.Timeout)
	}
	if c.StartGrace <= 0 {
		c.StartGrace = min(10*time.Second, c.Interval)
	}
	if c.MaxTimeouts <= 0 {
		c.MaxTimeouts = 3
	}
	if c.Limits == (wire.Limits{}) {
		c.Limits = wire.DefaultLimits
	}
	if c.MaxNodes <= 0 {
		c.MaxNodes = DefaultMaxNodes
	}
	if c.NewNodeBurst <= 0 {
		c.NewNodeBurst = DefaultNewNodeBurst
	}
	if c.NewNodeEvery <= 0 {
		c.NewNodeEvery = DefaultNewNodeEvery
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// node is the gatherer's state for one tub ID.
type node struct {
	entry statsfile.Node // what goes into stats.json

	provider statsrpc.Provider // valid while connected
	peer     *tub.Peer
	// polling is the connection whose poll is in flight, nil when none
	// is. A poll of a replaced connection may still be in flight when
	// the node reconnects; it must not keep the new one from being
	// polled, nor have its outcome recorded for the new one.
	polling *tub.Peer
	// fresh: connected and not yet answered, so its first answer is a
	// change worth writing at once (see Run).
	fresh    bool
	timeouts int // in a row
	errors   int64
	// warned is the poll error last logged at warning level, so that a node
	// failing the same way every round makes one line, not one per round.
	warned string
	// down is when the connection ended (epoch seconds), 0 while up or
	// for an entry loaded from the file.
	down float64
}

// Gatherer polls providers and keeps their latest samples.
type Gatherer struct {
	cfg Config

	mu     sync.Mutex
	nodes  map[string]*node
	order  []string // tub IDs in first-seen order: the file's order
	closed bool
	// gen counts furl rotations: a Gatherer capability handed out under an
	// older furl refuses provide (see Revoke).
	gen uint64

	// changed is signalled when a node comes up (its first answer after
	// connecting) or goes down, so that Run writes the file within a
	// second instead of at the next round.
	changed chan struct{}
	writeMu sync.Mutex // orders writes: the last file written is the newest state

	polls   sync.WaitGroup // polls and disconnect watchers in flight
	metrics metrics
	dec     wire.Decoder // this gatherer's own caches of the names its nodes send

	buckets       map[string]*bucket // new identities per source address
	refused       int64              // provides refused since the last warning
	refusedLogged time.Time
}

// New returns a gatherer that starts from the nodes in cfg.StatsFile. A
// file that exists but cannot be parsed is an error: it is never
// overwritten, so that it can be restored from a backup or moved aside.
func New(cfg Config) (*Gatherer, error) {
	cfg.setDefaults()
	g := &Gatherer{cfg: cfg, nodes: make(map[string]*node), changed: make(chan struct{}, 1)}
	f, err := statsfile.Load(cfg.StatsFile)
	switch {
	case errors.Is(err, errNotExist):
	case err != nil:
		return nil, fmt.Errorf("error while attempting to load stats file %s: %w; restore it from a backup, or move it aside if no backup is available", cfg.StatsFile, err)
	default:
		for _, n := range f.Nodes {
			if _, dup := g.nodes[n.TubID]; dup {
				continue
			}
			n.Up = false
			// The file may come from a version that kept whatever a node
			// sent.
			n.Nickname, n.LastError = cleanNickname(n.Nickname), cleanError(n.LastError)
			if n.LastError == "" || n.LastError == Stopped {
				// Say why it is down until it reconnects, rather than
				// leave a bare "no" in gatherer status.
				n.LastError = NotReconnected
			}
			g.nodes[n.TubID] = &node{entry: n}
			g.order = append(g.order, n.TubID)
		}
	}
	return g, nil
}

// The last_error of a node that is down because of the gatherer: Stopped
// in the file a stopped gatherer leaves, NotReconnected from its start
// until the node connects again.
const (
	Stopped        = "the gatherer stopped"
	NotReconnected = "not connected since the gatherer started"
)

// Client returns the Gatherer capability to export under the furl. After a
// Revoke it refuses provide; export a new Client then.
func (g *Gatherer) Client() capnp.Client {
	g.mu.Lock()
	gen := g.gen
	g.mu.Unlock()
	return capnp.Client(statsrpc.Gatherer_ServerToClient(provideServer{g, gen}))
}

type provideServer struct {
	g   *Gatherer
	gen uint64
}

// errRevoked is what a node that fetched the Gatherer under a rotated furl
// gets from provide.
var errRevoked = errors.New("provide: this furl was rotated; the node needs the new one")

// Provide records a node's provider, keyed by the tub ID the connection
// authenticated, and polls it at once.
func (s provideServer) Provide(ctx context.Context, call statsrpc.Gatherer_provide) error {
	peer, ok := tub.PeerFromContext(ctx)
	if !ok {
		s.g.cfg.Logger.Warn("provide from an unauthenticated connection refused")
		return errors.New("provide: connection is not authenticated")
	}
	nick, err := call.Args().Nickname()
	if err != nil {
		return fmt.Errorf("provide: nickname: %w", err)
	}
	prov := call.Args().Provider()
	if !capnp.Client(prov).IsValid() {
		return errors.New("provide: no provider")
	}
	ok, err = s.g.provide(peer, cleanNickname(nick), prov.AddRef(), s.gen)
	if err != nil {
		s.g.warnRefused(err, peer.TubID, peer.RemoteAddr.String())
		return err
	}
	if !ok {
		return errRevoked
	}
	return nil
}

// provide records prov as the provider of the node peer authenticated; it
// returns false for a provide under a rotated furl. A new identity is
// refused (the error) when its address has made too many lately, or when
// the gatherer is full of nodes that are up.
func (g *Gatherer) provide(peer *tub.Peer, nickname string, prov statsrpc.Provider, gen uint64) (bool, error) {
	g.mu.Lock()
	if g.closed || gen != g.gen {
		revoked := gen != g.gen
		g.mu.Unlock()
		prov.Release()
		if revoked {
			g.cfg.Logger.Warn("provide under a rotated furl refused", "nickname", nickname, "tubid", peer.TubID, "remote", peer.RemoteAddr.String())
			peer.Close()
		}
		return !revoked, nil
	}
	n, known := g.nodes[peer.TubID]
	if !known {
		var refuse error
		if !g.allowNew(addrKey(peer.RemoteAddr), g.cfg.Now()) {
			refuse = errTooManyNew
		} else if !g.makeRoom() {
			refuse = errFull
		}
		if refuse != nil {
			g.mu.Unlock()
			prov.Release()
			return true, refuse
		}
		n = &node{entry: statsfile.Node{TubID: peer.TubID}}
		g.nodes[peer.TubID] = n
		g.order = append(g.order, peer.TubID)
	}
	oldPeer, oldProv := n.peer, n.provider
	samePeer := oldPeer == peer
	n.peer, n.provider = peer, prov
	n.entry.Nickname = nickname
	n.entry.Up = true
	n.down = 0
	n.timeouts = 0
	if n.entry.LastError == NotReconnected {
		n.entry.LastError = ""
	}
	if !samePeer {
		n.fresh = true
		g.polls.Add(1)
	}
	g.mu.Unlock()

	if oldProv != (statsrpc.Provider{}) {
		oldProv.Release()
	}
	if !samePeer {
		if oldPeer != nil {
			// A node has one live connection: the new one replaces it.
			oldPeer.Close()
		}
		g.verbose("connect %q [%s]", nickname, peer.TubID)
		g.cfg.Logger.Info("node connected", "nickname", nickname, "tubid", peer.TubID, "remote", peer.RemoteAddr.String())
		peer.AfterClose(func() { g.watch(n, peer) })
	}
	g.pollNode(n, nil)
	return true, nil
}

// noteChange wakes Run to write the file soon.
func (g *Gatherer) noteChange() {
	select {
	case g.changed <- struct{}{}:
	default:
	}
}

// watch marks a node down when its connection ends.
func (g *Gatherer) watch(n *node, peer *tub.Peer) {
	defer g.polls.Done()
	g.mu.Lock()
	if n.peer != peer {
		g.mu.Unlock() // replaced by a newer connection
		return
	}
	prov := n.provider
	n.peer, n.provider = nil, statsrpc.Provider{}
	n.entry.Up = false
	n.down = epoch(g.cfg.Now())
	if err := peer.Err(); err != nil && n.entry.LastError == "" {
		n.entry.LastError = cleanError("connection lost: " + err.Error())
	}
	n.fresh = false
	nick := n.entry.Nickname
	g.mu.Unlock()
	prov.Release()
	g.noteChange()
	g.verbose("disconnect %q [%s]", nick, peer.TubID)
	g.cfg.Logger.Info("node disconnected", "nickname", nick, "tubid", peer.TubID)
}

func (g *Gatherer) verbose(format string, args ...any) {
	if g.cfg.Verbose != nil {
		fmt.Fprintf(g.cfg.Verbose, format+"\n", args...)
	}
}

// pollNode polls n unless a poll of its connection is in flight: as part
// of round, or on its own (round nil) with a timeout of its own.
func (g *Gatherer) pollNode(n *node, round *pollRound) {
	g.mu.Lock()
	if g.closed || n.peer == nil || n.polling == n.peer {
		g.mu.Unlock()
		return
	}
	prov, peer := n.provider.AddRef(), n.peer
	n.polling = peer
	g.polls.Add(1)
	if round != nil {
		round.wg.Add(1)
	}
	g.mu.Unlock()
	go func() {
		defer g.polls.Done()
		if round != nil {
			defer round.wg.Done()
			g.poll(round.ctx, n, prov, peer)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), g.cfg.Timeout)
		defer cancel()
		g.poll(ctx, n, prov, peer)
	}()
}

// pollRound is the polls of one round. They start together and share one
// deadline, so they share one context: a timer per poll showed in the
// gatherer's CPU profile (BENCHMARKS.md, second pass).
type pollRound struct {
	ctx context.Context
	wg  sync.WaitGroup
}

// poll calls getStats on prov within ctx and records the outcome.
func (g *Gatherer) poll(ctx context.Context, n *node, prov statsrpc.Provider, peer *tub.Peer) {
	defer prov.Release()
	start := g.cfg.Now()
	fut, release := prov.GetStats(ctx, nil)
	var snap stats.Snapshot
	res, err := fut.Struct()
	// Only a call that failed for want of time timed out: a reply that
	// made it just as the deadline passed is a success.
	timedOut := errors.Is(err, context.DeadlineExceeded)
	if err == nil {
		var s statsrpc.Stats
		if s, err = res.Stats(); err == nil {
			snap, err = g.dec.ToSnapshot(s, g.cfg.Limits)
		}
	}
	release()
	end := g.cfg.Now()
	if timedOut {
		err = fmt.Errorf("getStats timed out after %s", g.cfg.Timeout)
	}
	// An exception's text is the node's to choose: clean it once, before
	// it reaches last_error, the log, the file or a terminal.
	var errText string
	if err != nil {
		errText = cleanError(err.Error())
	}

	g.mu.Lock()
	if n.polling == peer {
		n.polling = nil
	}
	if n.peer != nil && n.peer != peer {
		// The node reconnected meanwhile: this outcome is the old
		// connection's, and the new one is polled on its own.
		g.mu.Unlock()
		return
	}
	n.entry.LastPoll = epoch(start)
	n.entry.PollSeconds = end.Sub(start).Seconds()
	closeIt := false
	logAs := slog.LevelDebug
	if err != nil {
		n.entry.LastError = errText
		n.errors++
		if n.warned != n.entry.LastError {
			n.warned, logAs = n.entry.LastError, slog.LevelWarn
		}
		if timedOut {
			n.timeouts++
			closeIt = n.timeouts >= g.cfg.MaxTimeouts && n.peer == peer
		} else {
			n.timeouts = 0
		}
	} else {
		n.timeouts = 0
		n.entry.LastError = ""
		n.entry.Timestamp = epoch(end)
		n.entry.Stats = snap
		if n.warned != "" {
			n.warned, logAs = "", slog.LevelInfo
		}
	}
	cameUp := err == nil && n.fresh
	if cameUp {
		n.fresh = false
	}
	nick, timeouts := n.entry.Nickname, n.timeouts
	g.mu.Unlock()
	if cameUp {
		g.noteChange()
	}

	if err != nil {
		g.cfg.Logger.Log(context.Background(), logAs, "poll failed", "nickname", nick, "tubid", peer.TubID, "err", errText)
	} else {
		if logAs == slog.LevelInfo {
			g.cfg.Logger.Info("polls succeed again", "nickname", nick, "tubid", peer.TubID)
		}
		if g.cfg.OnPoll != nil {
			g.cfg.OnPoll(peer.TubID, end, snap)
		}
	}
	if closeIt {
		g.cfg.Logger.Warn("closing connection after repeated timeouts", "nickname", nick, "tubid", peer.TubID, "timeouts", timeouts)
		peer.Close()
	}
}

func epoch(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// PollErrors returns how many polls of the node with tubID have failed
// since the gatherer started.
func (g *Gatherer) PollErrors(tubID string) int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if n, ok := g.nodes[tubID]; ok {
		return n.errors
	}
	return 0
}

// Connected returns how many nodes are connected now.
func (g *Gatherer) Connected() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	c := 0
	for _, n := range g.nodes {
		if n.peer != nil {
			c++
		}
	}
	return c
}
