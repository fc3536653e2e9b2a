package gatherer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"capstats/capnp/tub"
	"capstats/internal/atomicfile"
	"capstats/statsfile"
)

// Daemon is a running gatherer: its listener, its furl and the poller.
type Daemon struct {
	Listener *tub.Listener
	Furl     tub.Furl
	Dir      string

	g *Gatherer
}

// Gatherer returns the poller the daemon serves.
func (d *Daemon) Gatherer() *Gatherer { return d.g }

// Run polls until ctx is done; see Gatherer.Run.
func (d *Daemon) Run(ctx context.Context) error { return d.g.Run(ctx) }

// Start opens the gatherer living in dir: it loads the key, the stats file
// and the furl (so nodes re-attach by themselves after a restart), listens,
// and exports the Gatherer object. Call Run to poll and Close to stop.
func Start(dir string, cfg Config, opts *tub.Options) (*Daemon, error) {
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
	if cfg.StatsFile == "" {
		cfg.StatsFile = filepath.Join(dir, StatsFile)
	}
	if err := statsfile.CleanTemp(filepath.Dir(cfg.StatsFile)); err != nil {
		return nil, fmt.Errorf("cleaning temporary files: %w", err)
	}
	g, err := New(cfg)
	if err != nil {
		return nil, err
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
		if err := atomicfile.Write(furlPath, []byte(furl.String()+"\n"), 0o600); err != nil {
			ln.Close()
			return nil, fmt.Errorf("writing furl file: %w", err)
		}
	}
	return &Daemon{g: g, Listener: ln, Furl: furl, Dir: dir}, nil
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
	err := d.g.Close()
	d.Listener.Close()
	return err
}
