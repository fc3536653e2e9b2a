package gatherer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"capstats/capnp/tub"
	"capstats/internal/atomicfile"
	"capstats/statsfile"
)

// Daemon is a running gatherer: its listener, its furl, the poller and
// the control socket.
type Daemon struct {
	Listener *tub.Listener
	// Furl is the furl at start; RotateFurl changes it (read CurrentFurl
	// then).
	Furl tub.Furl
	Dir  string

	furlMu  sync.Mutex
	g       *Gatherer
	ctl     *control
	started time.Time
}

// Gatherer returns the poller the daemon serves.
func (d *Daemon) Gatherer() *Gatherer { return d.g }

// Run polls until ctx is done; see Gatherer.Run.
func (d *Daemon) Run(ctx context.Context) error { return d.g.Run(ctx) }

// Start opens the gatherer living in dir: it loads the key, the stats file
// and the furl (so nodes re-attach by themselves after a restart), listens,
// and exports the Gatherer object. Call Run to poll and Close to stop.
// Commands reach it on the control socket (see ControlSocket).
func Start(dir string, cfg Config, opts tub.Options) (d *Daemon, err error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("basedir: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("basedir %s is not a directory", dir)
	}
	id, err := tub.LoadIdentity(filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, fmt.Errorf("gatherer key: %w", err)
	}
	portLine, err := readLine(filepath.Join(dir, PortFile))
	if err != nil {
		return nil, fmt.Errorf("port file: %w", err)
	}
	addr, err := ParsePort(portLine)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, PortFile), err)
	}
	locLine, err := readLine(filepath.Join(dir, LocationFile))
	if err != nil {
		return nil, fmt.Errorf("location file: %w", err)
	}
	hints, err := parseLocation(locLine)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, LocationFile), err)
	}
	swiss, err := loadSwissnum(filepath.Join(dir, FurlFile), id.TubID())
	if err != nil {
		return nil, err
	}
	// The control socket before anything is written: it also finds a
	// gatherer already running here.
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	ctl, err := listenControl(dir, logger)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			ctl.close()
		}
	}()
	if cfg.StatsFile == "" {
		cfg.StatsFile = filepath.Join(dir, StatsFile)
	}
	if err := statsfile.CleanTemp(filepath.Dir(cfg.StatsFile)); err != nil {
		return nil, fmt.Errorf("cleaning temporary files: %w", err)
	}
	// A symlinked stats file is written through to its target, whose
	// directory may hold a temp file of ours too.
	if err := atomicfile.CleanTempOf(cfg.StatsFile); err != nil {
		return nil, fmt.Errorf("cleaning temporary files: %w", err)
	}
	g, err := New(cfg)
	if err != nil {
		return nil, err
	}
	// Messages larger than a reply within the limits can be are refused
	// before they are read: a node that sends them is disconnected, and the
	// bytes a poll round holds are bounded by the limits.
	if opts.MaxMessageSize == 0 {
		opts.MaxMessageSize = g.cfg.Limits.MaxMessageSize()
	}
	ln, err := tub.Listen(addr, id, opts)
	if err != nil {
		return nil, fmt.Errorf("listen on %s (from %s): %w", addr, filepath.Join(dir, PortFile), err)
	}
	if _, err := ln.RegisterAs(swiss, g.Client()); err != nil {
		ln.Close()
		return nil, err
	}
	// A port of 0 means "any": advertise the one we got.
	if _, p, _ := net.SplitHostPort(addr); p == "0" {
		hints = []string{ln.Addr().String()}
	}
	furl := tub.Furl{TubID: id.TubID(), Hints: hints, Swissnum: swiss}
	furlPath := filepath.Join(dir, FurlFile)
	if cur, err := readLine(furlPath); err != nil || cur != furl.String() {
		if err := writeFurl(dir, furl); err != nil {
			ln.Close()
			return nil, err
		}
	}
	d = &Daemon{g: g, Listener: ln, Furl: furl, Dir: dir, ctl: ctl, started: time.Now()}
	ctl.serve(d)
	return d, nil
}

// loadSwissnum returns the swiss number saved in the furl file, or a new one
// when there is no file yet. A furl file for another key is refused: it
// would hand nodes a furl that no longer reaches this gatherer.
func loadSwissnum(path, tubID string) (string, error) {
	line, err := readLine(path)
	if errors.Is(err, fs.ErrNotExist) {
		return tub.NewSwissnum(), nil
	}
	if err != nil {
		return "", fmt.Errorf("furl file: %w", err)
	}
	if err := tub.CheckPrivate(path); err != nil {
		return "", fmt.Errorf("furl file: %w", err)
	}
	f, err := tub.ParseFurl(line)
	if err != nil {
		return "", fmt.Errorf("furl file %s: %w", path, err)
	}
	if f.TubID != tubID {
		return "", fmt.Errorf("furl file %s names tub %s but the key in %s is tub %s; restore the matching key, or move the furl file aside to make a new furl (nodes then need the new one)", path, f.TubID, KeyFile, tubID)
	}
	return f.Swissnum, nil
}

// Close stops the gatherer as Gatherer.Close does (polling ended, every
// connection closed, the file written a last time), then closes the
// listener. It returns the last write's error.
func (d *Daemon) Close() error {
	d.ctl.close()
	err := d.g.Close()
	d.Listener.Close()
	return err
}
