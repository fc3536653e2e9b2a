package gatherer

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"capstats/internal/lockfile"
)

// ControlSocket is the unix socket, in the basedir, through which the
// commands for everyday tasks reach a running gatherer. It is mode 0600 in
// a 0700 basedir, and only the gatherer's own user (or root) is served:
// whoever can use it can forget nodes and rotate the furl.
const ControlSocket = "control.sock"

// ErrNotRunning says that no gatherer answers on the control socket.
var ErrNotRunning = errors.New("the gatherer is not running")

const (
	opForget = "forget"
	opRotate = "rotate-furl"
	opStatus = "status"

	// maxControlBytes bounds a request and a reply; both are one line.
	maxControlBytes = 64 << 10
	controlTimeout  = 10 * time.Second
)

type controlRequest struct {
	Op   string `json:"op"`
	Node string `json:"node,omitempty"`
}

type controlReply struct {
	Error     string  `json:"error,omitempty"`
	TubID     string  `json:"tubid,omitempty"`
	Nickname  string  `json:"nickname,omitempty"`
	Furl      string  `json:"furl,omitempty"`
	PID       int     `json:"pid,omitempty"`
	Started   float64 `json:"started,omitempty"`
	Connected int     `json:"connected,omitempty"`
	Known     int     `json:"known,omitempty"`
}

// socketPath returns a name for the socket at path that fits in a
// sockaddr_un (108 bytes): a long basedir is reached through its open
// directory in /proc/self/fd. done closes that directory.
func socketPath(path string) (name string, done func(), err error) {
	if len(path) < 100 {
		return path, func() {}, nil
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return "", nil, err
	}
	return fmt.Sprintf("/proc/self/fd/%d/%s", d.Fd(), filepath.Base(path)), func() { d.Close() }, nil
}

// control serves a Daemon's control socket, one request at a time.
type control struct {
	ln   *net.UnixListener
	d    *Daemon
	log  *slog.Logger
	wg   sync.WaitGroup
	path string
}

// listenControl creates the control socket of dir. A socket that a running
// gatherer answers on means one already lives there; one left by a
// gatherer that died is replaced.
func listenControl(dir string, log *slog.Logger) (*control, error) {
	path := filepath.Join(dir, ControlSocket)
	if _, err := callControl(dir, controlRequest{Op: opStatus}); !errors.Is(err, ErrNotRunning) {
		return nil, fmt.Errorf("a gatherer is already running in %s (it answers on %s)", dir, path)
	}
	name, done, err := socketPath(path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	defer done()
	if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("removing the stale control socket: %w", err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: name, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	// The name may be one in /proc/self/fd that is gone by then: close
	// removes the socket by its real path.
	ln.SetUnlinkOnClose(false)
	// Until this chmod the socket has the umask's mode; peerAllowed admits
	// no other user meanwhile either.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		os.Remove(path)
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return &control{ln: ln, log: log, path: path}, nil
}

func (c *control) serve(d *Daemon) {
	c.d = d
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			conn, err := c.ln.AcceptUnix()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					c.log.Error("control socket accept failed; everyday commands cannot reach this gatherer", "err", err)
				}
				return
			}
			c.handle(conn)
		}
	}()
}

func (c *control) close() {
	c.ln.Close()
	c.wg.Wait()
	os.Remove(c.path)
}

func (c *control) handle(conn *net.UnixConn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(controlTimeout))
	if err := peerAllowed(conn); err != nil {
		c.log.Warn("control socket connection refused", "err", err)
		return
	}
	var req controlRequest
	var rep controlReply
	line, err := bufio.NewReaderSize(io.LimitReader(conn, maxControlBytes), 4096).ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &req)
	}
	if err != nil {
		rep.Error = "bad control request"
	} else {
		rep = c.d.answer(req)
	}
	b, _ := json.Marshal(rep)
	conn.Write(append(b, '\n'))
}

// answer carries out one control request.
func (d *Daemon) answer(req controlRequest) controlReply {
	switch req.Op {
	case opStatus:
		g := d.g
		g.mu.Lock()
		known := len(g.order)
		g.mu.Unlock()
		return controlReply{PID: os.Getpid(), Started: epoch(d.started), Connected: g.Connected(), Known: known, TubID: d.Listener.TubID()}
	case opForget:
		n, err := d.g.Forget(req.Node)
		if err != nil {
			return controlReply{Error: err.Error()}
		}
		return controlReply{TubID: n.TubID, Nickname: n.Nickname}
	case opRotate:
		f, err := d.RotateFurl()
		if err != nil {
			return controlReply{Error: err.Error()}
		}
		return controlReply{Furl: f.String()}
	}
	return controlReply{Error: fmt.Sprintf("unknown control request %q", req.Op)}
}

// callControl sends req to the gatherer running in dir. It returns
// ErrNotRunning when nothing listens there, and the gatherer's refusal as
// an error.
func callControl(dir string, req controlRequest) (controlReply, error) {
	path := filepath.Join(dir, ControlSocket)
	name, done, err := socketPath(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return controlReply{}, fmt.Errorf("basedir %s: %w", dir, err)
		}
		return controlReply{}, err
	}
	defer done()
	conn, err := net.DialTimeout("unix", name, controlTimeout)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return controlReply{}, ErrNotRunning
		}
		return controlReply{}, fmt.Errorf("control socket %s: %w", path, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(controlTimeout))
	b, _ := json.Marshal(req)
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return controlReply{}, fmt.Errorf("control socket %s: %w", path, err)
	}
	line, err := bufio.NewReader(io.LimitReader(conn, maxControlBytes)).ReadBytes('\n')
	if err != nil {
		return controlReply{}, fmt.Errorf("control socket %s: no answer from the gatherer: %w", path, err)
	}
	var rep controlReply
	if err := json.Unmarshal(line, &rep); err != nil {
		return controlReply{}, fmt.Errorf("control socket %s: bad answer from the gatherer", path)
	}
	if rep.Error != "" {
		return rep, errors.New(rep.Error)
	}
	return rep, nil
}

// whileStopped runs edit with the basedir locked, as a gatherer locks it
// while it runs, so that one starting meanwhile cannot load the files
// before the edit and write them back after it.
func whileStopped(dir string, edit func() error) error {
	lockPath := filepath.Join(dir, LockFile)
	l, err := lockfile.Acquire(lockPath)
	var held *lockfile.HeldError
	if errors.As(err, &held) {
		return fmt.Errorf("%w (it does not answer on %s yet: if it is starting, try again in a moment)", err, filepath.Join(dir, ControlSocket))
	}
	if err != nil {
		return err
	}
	defer l.Release()
	keepOwner(dir, lockPath)
	return edit()
}

// RunInfo is what a running gatherer says about itself.
type RunInfo struct {
	PID       int
	Started   time.Time
	Connected int // nodes connected now
	Known     int // nodes in its stats file
}

// Running asks the gatherer in dir about itself; ErrNotRunning if it is
// not running.
func Running(dir string) (RunInfo, error) {
	rep, err := callControl(dir, controlRequest{Op: opStatus})
	if err != nil {
		return RunInfo{}, err
	}
	return RunInfo{PID: rep.PID, Started: time.Unix(0, int64(rep.Started*1e9)), Connected: rep.Connected, Known: rep.Known}, nil
}
