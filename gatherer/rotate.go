package gatherer

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"capstats/capnp/tub"
	"capstats/internal/atomicfile"
)

// RotatedError is the last_error of a node cut off by a furl rotation.
const RotatedError = "disconnected: the gatherer's furl was rotated; the node needs the new furl"

// Revoke makes every Gatherer capability handed out so far refuse provide,
// and closes the connections of the nodes that came with it: after a furl
// rotation, whoever held the old furl is cut off, and the nodes come back
// with the new one.
func (g *Gatherer) Revoke() {
	g.mu.Lock()
	g.gen++
	var peers []*tub.Peer
	for _, n := range g.nodes {
		if n.peer != nil {
			n.entry.LastError = RotatedError
			peers = append(peers, n.peer)
		}
	}
	g.mu.Unlock()
	for _, p := range peers {
		p.Close() // its watcher marks the node down
	}
}

// CurrentFurl returns the furl the daemon exports now.
func (d *Daemon) CurrentFurl() tub.Furl {
	d.furlMu.Lock()
	defer d.furlMu.Unlock()
	return d.Furl
}

// RotateFurl exports the gatherer under a new swiss number, refuses the old
// one from then on (connected nodes are disconnected), and saves the new
// furl in the furl file.
func (d *Daemon) RotateFurl() (tub.Furl, error) {
	d.furlMu.Lock()
	defer d.furlMu.Unlock()
	f := d.Furl
	f.Swissnum = tub.NewSwissnum()
	// The file first: if it cannot be written, nothing has changed.
	if err := writeFurl(d.Dir, f); err != nil {
		return tub.Furl{}, err
	}
	d.g.Revoke()
	if _, err := d.Listener.RegisterAs(f.Swissnum, d.g.Client()); err != nil {
		return tub.Furl{}, err
	}
	d.Listener.Unregister(d.Furl.Swissnum)
	d.g.cfg.Logger.Warn("furl rotated: the old one is refused; nodes need the new furl", "furl_file", filepath.Join(d.Dir, FurlFile))
	d.Furl = f
	return f, nil
}

func writeFurl(dir string, f tub.Furl) error {
	path := filepath.Join(dir, FurlFile)
	if err := atomicfile.Write(path, []byte(f.String()+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing furl file: %w", err)
	}
	keepOwner(dir, path)
	return nil
}

// readFurl reads the furl file of the gatherer in dir and checks it names
// the gatherer's key.
func readFurl(dir string) (tub.Furl, error) {
	id, err := tub.LoadIdentity(filepath.Join(dir, KeyFile))
	if err != nil {
		return tub.Furl{}, fmt.Errorf("gatherer key: %w", err)
	}
	path := filepath.Join(dir, FurlFile)
	line, err := readLine(path)
	if err != nil {
		return tub.Furl{}, err
	}
	f, err := tub.ParseFurl(line)
	if err != nil {
		return tub.Furl{}, fmt.Errorf("furl file %s: %w", path, err)
	}
	if f.TubID != id.TubID() {
		return tub.Furl{}, fmt.Errorf("furl file %s names tub %s but the key in %s is tub %s", path, f.TubID, KeyFile, id.TubID())
	}
	return f, nil
}

// RotateFurl gives the gatherer in dir a new swiss number: at once through
// the control socket when it runs, or in the furl file, for its next start,
// when it is stopped. live says which.
func RotateFurl(dir string) (f tub.Furl, live bool, err error) {
	if err := CheckBasedir(dir); err != nil {
		return tub.Furl{}, false, err
	}
	rep, err := callControl(dir, controlRequest{Op: opRotate})
	if err == nil {
		f, err = tub.ParseFurl(rep.Furl)
		return f, true, err
	}
	if !errors.Is(err, ErrNotRunning) {
		return tub.Furl{}, false, err
	}
	err = whileStopped(dir, func() error {
		f, err = readFurl(dir)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("no furl file in %s yet: the gatherer makes one when it first starts (gatherer run --basedir %s)", dir, dir)
		}
		if err != nil {
			return err
		}
		f.Swissnum = tub.NewSwissnum()
		return writeFurl(dir, f)
	})
	if err != nil {
		return tub.Furl{}, false, err
	}
	return f, false, nil
}

// SetLocation changes where the gatherer in dir listens (port) and how
// nodes reach it (location), keeping its key and so its tub ID and swiss
// number. Either may be empty to keep it. It returns the furl with the new
// hints, also written to the furl file if there is one (the zero Furl if
// there is not). A running gatherer moves when it is restarted.
func SetLocation(dir, location, port string) (tub.Furl, error) {
	if location == "" && port == "" {
		return tub.Furl{}, &UsageError{"say what changes: --location HINTS, --port PORT, or both"}
	}
	if err := CheckBasedir(dir); err != nil {
		return tub.Furl{}, err
	}
	var hints []string
	if location != "" {
		var err error
		if hints, err = parseLocation(location); err != nil {
			return tub.Furl{}, &UsageError{err.Error()}
		}
	}
	if port != "" {
		if _, err := ParsePort(port); err != nil {
			return tub.Furl{}, &UsageError{err.Error()}
		}
	}
	f, err := readFurl(dir)
	hasFurl := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return tub.Furl{}, err
	}
	if port != "" {
		if err := atomicfile.Write(filepath.Join(dir, PortFile), []byte(port+"\n"), 0o644); err != nil {
			return tub.Furl{}, err
		}
		keepOwner(dir, filepath.Join(dir, PortFile))
	}
	if location != "" {
		if err := atomicfile.Write(filepath.Join(dir, LocationFile), []byte(location+"\n"), 0o644); err != nil {
			return tub.Furl{}, err
		}
		keepOwner(dir, filepath.Join(dir, LocationFile))
	}
	if !hasFurl || hints == nil {
		return f, nil
	}
	f.Hints = hints
	return f, writeFurl(dir, f)
}
