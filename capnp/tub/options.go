package tub

import (
	"log/slog"
	"time"
)

// Options tune listeners and dialers. Pass them by value; the zero value
// of every field means its default. The limits after MaxMessageSize apply
// to a listener, and bound what a peer can hold before and after it has
// proved it knows a furl: anyone who can reach the port can connect.
type Options struct {
	// Logger receives connection events, refusals and the RPC system's
	// protocol errors, which go-capnp drops when no logger is set.
	// Default: slog.Default(), as for every capstats library.
	Logger *slog.Logger
	// HandshakeTimeout bounds the TCP connect plus TLS handshake of a dial,
	// and on a listener both the wait for a handshake slot and the
	// handshake itself, so that a client that opens TCP and never speaks is
	// freed. Default 10s.
	HandshakeTimeout time.Duration
	// LocalAddr, when set, is the local IP address a dial connects from
	// (a load generator playing many hosts on loopback). Default: any.
	LocalAddr string
	// MaxMessageSize bounds one incoming Cap'n Proto message, so that a
	// hostile peer cannot make this side allocate without bound.
	// Default DefaultMaxMessageSize.
	MaxMessageSize uint64

	// MaxHandshakes bounds concurrent TLS handshakes on a listener, so that
	// a storm of connections cannot exhaust CPU or memory; connections
	// beyond it wait their turn. Default 64.
	MaxHandshakes int
	// MaxHandshakesPerAddr bounds the concurrent handshakes of one source
	// IP address, so that sockets that never speak, from one address, hold
	// only that address's slots while others connect. Connections beyond it
	// wait their turn, so many nodes behind one NAT still all get in.
	// Default 16.
	MaxHandshakesPerAddr int
	// MaxPending bounds the accepted connections that have not finished
	// their handshake (waiting or handshaking). When it is reached the
	// oldest of them is dropped for the newcomer: an honest handshake takes
	// milliseconds, a silent socket is the one that has been there longest.
	// Default 4096.
	MaxPending int
	// MaxPendingPerAddr is MaxPending for one source address: its oldest
	// pending connection is dropped first. Default 1024, enough for a
	// 1,000-node storm from behind one NAT.
	MaxPendingPerAddr int
	// MaxConns bounds a listener's connections, pending and established.
	// It is lowered to keep FDReserve descriptors free under the soft
	// RLIMIT_NOFILE. Default 16384.
	MaxConns int
	// MaxConnsPerAddr bounds the connections, pending and established, from
	// one source address. Default 4096.
	MaxConnsPerAddr int
	// FDReserve is how many file descriptors under the soft RLIMIT_NOFILE
	// a listener leaves to the rest of the process (the stats file, HTTP
	// clients, logs): new connections are refused before it is reached.
	// Default 256 (a quarter of the limit when that is under 1024).
	FDReserve int
	// FetchTimeout: a connection that has not fetched a registered object
	// this long after its handshake is closed. Default 5s.
	FetchTimeout time.Duration
	// PreAuthMessageSize bounds an incoming message until the peer has
	// fetched a registered object: a fetch is a few dozen bytes.
	// Default 4 KiB.
	PreAuthMessageSize uint64
	// MaxCallsInFlight bounds the calls (and bootstraps) a peer has made on
	// one connection that are not answered yet. A peer that exceeds it is
	// disconnected, not queued. Sixteen times it bounds the messages held
	// for a peer: answers it has not finished and messages waiting to go
	// out while it does not read. Default 256.
	MaxCallsInFlight int
	// MaxHeldBytes bounds the bytes of incoming messages one connection
	// holds at once (calls being served, replies not yet consumed). A peer
	// that exceeds it is disconnected. Default 2 × MaxMessageSize.
	MaxHeldBytes uint64
	// MaxBufferedBytes bounds the bytes of incoming messages that all of a
	// listener's connections hold at once, since the per-connection bounds
	// add up over many connections. A message takes its size from it when
	// its frame header has arrived, before its body is read; while there is
	// no room, that connection is not read, and TCP holds its peer back.
	// Messages are served in the order their headers arrived. Default
	// 16 MiB, and never less than MaxMessageSize.
	MaxBufferedBytes uint64
	// MaxBufferedBytesPerAddr is the part of MaxBufferedBytes that the
	// connections from one source address may hold, so that one host
	// cannot keep nodes elsewhere waiting. Default a quarter of
	// MaxBufferedBytes, and never less than MaxMessageSize.
	MaxBufferedBytesPerAddr uint64
	// MessageTimeout: a message whose first byte has arrived must have
	// arrived whole this long after, not counting a wait for
	// MaxBufferedBytes, or the connection is closed. A peer that announces
	// a large message and trickles its body would hold its size of the
	// budget meanwhile; while other messages wait for room, a quarter of
	// it is allowed. Checked every second, or every quarter when shorter.
	// Default 20s (1 MiB at 50 KB/s).
	MessageTimeout time.Duration
}

// DefaultMaxMessageSize is large enough for a reply of 10,000 entries with
// long names, small enough that a hostile peer cannot exhaust memory.
const DefaultMaxMessageSize = 8 << 20

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.Default()
	}
	return o.Logger
}

func orDefault[T int | uint64 | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

func (o Options) handshakeTimeout() time.Duration {
	return orDefault(o.HandshakeTimeout, 10*time.Second)
}
func (o Options) maxMessageSize() uint64 { return orDefault(o.MaxMessageSize, DefaultMaxMessageSize) }
func (o Options) maxHandshakes() int     { return orDefault(o.MaxHandshakes, 64) }
func (o Options) maxHandshakesPerAddr() int {
	return min(orDefault(o.MaxHandshakesPerAddr, 16), o.maxHandshakes())
}
func (o Options) maxPending() int { return orDefault(o.MaxPending, 4096) }
func (o Options) maxPendingPerAddr() int {
	return min(orDefault(o.MaxPendingPerAddr, 1024), o.maxPending())
}
func (o Options) maxConns() int        { return orDefault(o.MaxConns, 16384) }
func (o Options) maxConnsPerAddr() int { return orDefault(o.MaxConnsPerAddr, 4096) }
func (o Options) fdReserve(soft uint64) int {
	if o.FDReserve > 0 {
		return o.FDReserve
	}
	if soft < 1024 {
		return int(soft / 4)
	}
	return 256
}
func (o Options) fetchTimeout() time.Duration { return orDefault(o.FetchTimeout, 5*time.Second) }
func (o Options) preAuthMessageSize() uint64 {
	return min(orDefault(o.PreAuthMessageSize, 4<<10), o.maxMessageSize())
}
func (o Options) maxCallsInFlight() int { return orDefault(o.MaxCallsInFlight, 256) }
func (o Options) maxBufferedBytes() uint64 {
	return max(orDefault(o.MaxBufferedBytes, 16<<20), o.maxMessageSize())
}
func (o Options) maxBufferedBytesPerAddr() uint64 {
	return max(orDefault(o.MaxBufferedBytesPerAddr, o.maxBufferedBytes()/4), o.maxMessageSize())
}
func (o Options) messageTimeout() time.Duration { return orDefault(o.MessageTimeout, 20*time.Second) }
func (o Options) maxHeldBytes() uint64 {
	return max(orDefault(o.MaxHeldBytes, 2*o.maxMessageSize()), o.maxMessageSize())
}
