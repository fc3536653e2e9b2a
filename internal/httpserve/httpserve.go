// Package httpserve is the HTTP server of the daemons' --http option: one
// with every timeout set and a bound on open connections, so that clients
// on an open port can neither hold connections for ever nor take the
// descriptors the daemon needs to write its files.
package httpserve

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Options bound the server. The zero value is the defaults.
type Options struct {
	// MaxConns bounds the connections open at once. When it is reached, a
	// new connection closes the one idle longest (a keep-alive connection
	// between requests, or one that has sent no request for 2s); until one
	// is, new ones wait in the kernel's backlog. Default 64.
	MaxConns int
	// ReadHeaderTimeout bounds reading a request's header. Default 10s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request. Default 30s.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing a response: long enough for /metrics of
	// 10,000 nodes to a slow scraper. Default 120s.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection with no request. Default 60s.
	IdleTimeout time.Duration
	// Logger gets the server's own errors at debug level. Default:
	// slog.Default().
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.MaxConns <= 0 {
		o.MaxConns = 64
	}
	if o.ReadHeaderTimeout <= 0 {
		o.ReadHeaderTimeout = 10 * time.Second
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 30 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 120 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 60 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Server serves one handler under Options' bounds.
type Server struct {
	srv *http.Server
	max int

	mu     sync.Mutex
	cond   *sync.Cond
	conns  map[net.Conn]*connInfo
	closed bool
}

type connInfo struct {
	state http.ConnState
	since time.Time
}

// New returns a server for h.
func New(h http.Handler, o Options) *Server {
	o.setDefaults()
	s := &Server{max: o.MaxConns, conns: make(map[net.Conn]*connInfo)}
	s.cond = sync.NewCond(&s.mu)
	s.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: o.ReadHeaderTimeout,
		ReadTimeout:       o.ReadTimeout,
		WriteTimeout:      o.WriteTimeout,
		IdleTimeout:       o.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(o.Logger.Handler(), slog.LevelDebug),
		ConnState:         s.connState,
	}
	return s
}

// Serve accepts connections on ln until Shutdown or Close.
func (s *Server) Serve(ln net.Listener) error {
	err := s.srv.Serve(&limitListener{Listener: ln, s: s})
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting and waits (within ctx) for requests in flight.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stop()
	return s.srv.Shutdown(ctx)
}

// Close stops at once.
func (s *Server) Close() error {
	s.stop()
	return s.srv.Close()
}

func (s *Server) stop() {
	s.mu.Lock()
	s.closed = true
	s.cond.Broadcast()
	s.mu.Unlock()
}

// Open returns how many accepted connections are open.
func (s *Server) Open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *Server) connState(c net.Conn, st http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch st {
	case http.StateClosed, http.StateHijacked:
		if _, ok := s.conns[c]; ok {
			delete(s.conns, c)
			s.cond.Broadcast()
		}
	default:
		if ci, ok := s.conns[c]; ok {
			ci.state, ci.since = st, time.Now()
		}
	}
}

// newGrace is how long a new connection has to send its request before it
// may be closed to make room: an honest client sends it at once.
const newGrace = 2 * time.Second

// waitRoom returns once a connection may be accepted: there is room, or
// the idle connection longest unused has been closed to make some.
// It returns with s.mu held when it returns true.
func (s *Server) waitRoom() bool {
	s.mu.Lock()
	for !s.closed && len(s.conns) >= s.max {
		var (
			oldest net.Conn
			at     time.Time
		)
		now := time.Now()
		for c, ci := range s.conns {
			idle := ci.state == http.StateIdle || (ci.state == http.StateNew && now.Sub(ci.since) >= newGrace)
			if idle && (oldest == nil || ci.since.Before(at)) {
				oldest, at = c, ci.since
			}
		}
		if oldest != nil {
			// Its server goroutine sees the close and reports StateClosed,
			// which frees the slot; until then it is not chosen again.
			s.conns[oldest].state = http.StateClosed
			oldest.Close()
			s.cond.Wait()
			continue
		}
		// Nothing to close yet: look again when a slot frees or a new
		// connection's grace may have run out.
		t := time.AfterFunc(newGrace/4, func() {
			s.mu.Lock()
			s.cond.Broadcast()
			s.mu.Unlock()
		})
		s.cond.Wait()
		t.Stop()
	}
	if s.closed {
		s.mu.Unlock()
		return false
	}
	return true
}

type limitListener struct {
	net.Listener
	s *Server
}

// Accept takes the next connection, then makes room for it: so an idle
// connection is closed only for one that is waiting, and at most one
// connection beyond the bound is open, the one being let in.
func (l *limitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if !l.s.waitRoom() {
		c.Close()
		return nil, net.ErrClosed
	}
	l.s.conns[c] = &connInfo{state: http.StateNew, since: time.Now()}
	l.s.mu.Unlock()
	return c, nil
}
