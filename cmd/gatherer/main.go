// Command gatherer runs a capstats stats gatherer: it exports a furl that
// nodes connect to, polls every node on a timer and writes stats.json.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"capstats/capnp/tub"
	"capstats/gatherer"
	"capstats/gatherer/web"
	"capstats/internal/httpserve"
	"capstats/internal/lockfile"
	"capstats/internal/version"
	"capstats/statsfile"
)

// CLI is the command line; `gatherer --basedir DIR` alone means run.
type CLI struct {
	Basedir  string           `help:"Directory holding the gatherer's key, furl and stats.json." required:"" type:"path" placeholder:"DIR" env:"CAPSTATS_GATHERER_BASEDIR"`
	LogLevel slog.Level       `help:"Log level: debug, info, warn, error." default:"info" name:"log-level"`
	Version  kong.VersionFlag `help:"Print the version and VCS revision, and exit."`

	Create CreateCmd `cmd:"" help:"Create a new gatherer basedir."`
	Run    RunCmd    `cmd:"" default:"withargs" help:"Run the gatherer (the default command)."`
	Furl   FurlCmd   `cmd:"" help:"Print the gatherer's furl."`
	Status StatusCmd `cmd:"" help:"Print a table of the nodes in stats.json."`
}

// StatusCmd prints the node table.
type StatusCmd struct{}

func (c *StatusCmd) Run(cli *CLI) error {
	f, err := statsfile.Load(filepath.Join(cli.Basedir, gatherer.StatsFile))
	if err != nil {
		return err
	}
	return gatherer.WriteTable(os.Stdout, f, time.Now())
}

// CreateCmd makes a basedir.
type CreateCmd struct {
	Hostname string `help:"Host name nodes use to reach this gatherer; a free TCP port is picked." placeholder:"HOST"`
	Location string `help:"Connection hints nodes use, e.g. tcp:stats.example.org:3456 (with --port)." placeholder:"HINTS"`
	Port     string `help:"Where to listen: tcp:PORT, tcp:PORT:interface=ADDR or PORT (with --location)." placeholder:"PORT"`
}

// RunCmd runs the gatherer.
type RunCmd struct {
	Interval   time.Duration  `help:"Time between poll rounds (at least 1s)." default:"60s"`
	Timeout    *time.Duration `help:"Timeout of one poll, at least 1s and at most --interval (default: the smaller of 30s and --interval)." placeholder:"DURATION"`
	WriteAfter *time.Duration `help:"Longest a round waits for slow nodes before writing stats.json, at least 1s and at most --interval (default: the smaller of 5s and --timeout)." name:"write-after" placeholder:"DURATION"`
	Verbose    bool           `help:"Print connect/disconnect lines and a line per poll round." short:"v"`
	HTTP       string         `help:"Serve /metrics (OpenMetrics, for Prometheus), /stats.json and a status page on this address, e.g. 127.0.0.1:8080 (off unless given)." name:"http" placeholder:"ADDR"`
}

// FurlCmd prints the furl.
type FurlCmd struct{}

func (c *CreateCmd) Run(cli *CLI) error {
	err := gatherer.Create(cli.Basedir, gatherer.CreateOptions{Hostname: c.Hostname, Location: c.Location, Port: c.Port})
	if err != nil {
		return err
	}
	fmt.Printf("created gatherer in %s; start it with: gatherer run --basedir %s\n", cli.Basedir, cli.Basedir)
	return nil
}

func (c *FurlCmd) Run(cli *CLI) error {
	b, err := os.ReadFile(filepath.Join(cli.Basedir, gatherer.FurlFile))
	if err != nil {
		return fmt.Errorf("no furl yet (run the gatherer once to make it): %w", err)
	}
	f, err := tub.ParseFurl(string(trimNL(b)))
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(cli.Basedir, gatherer.FurlFile), err)
	}
	fmt.Println(f)
	return nil
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// checkDurations refuses durations the gatherer cannot honour: zero or
// negative ones used to fall back to defaults silently, and sub-second
// ones make rounds back to back with fsync'd writes and kicked nodes.
func (c *RunCmd) checkDurations() error {
	check := func(flag string, d time.Duration) error {
		if d < time.Second {
			return &gatherer.UsageError{Msg: fmt.Sprintf("--%s %s: must be at least 1s", flag, d)}
		}
		if flag != "interval" && d > c.Interval {
			return &gatherer.UsageError{Msg: fmt.Sprintf("--%s %s: must not be longer than --interval %s", flag, d, c.Interval)}
		}
		return nil
	}
	if err := check("interval", c.Interval); err != nil {
		return err
	}
	if c.Timeout != nil {
		if err := check("timeout", *c.Timeout); err != nil {
			return err
		}
	}
	if c.WriteAfter != nil {
		if err := check("write-after", *c.WriteAfter); err != nil {
			return err
		}
	}
	return nil
}

// lockBasedir creates the basedir if it is missing and locks it, before
// anything in it is read or written: a second gatherer on the same basedir
// would overwrite the first one's stats.json and furl file.
func lockBasedir(dir string) (*lockfile.Lock, error) {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create basedir: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("basedir: %w", err)
	case !fi.IsDir():
		return nil, fmt.Errorf("basedir %s is not a directory", dir)
	}
	return lockfile.Acquire(filepath.Join(dir, gatherer.LockFile))
}

func (c *RunCmd) Run(cli *CLI, log *slog.Logger) error {
	if err := c.checkDurations(); err != nil {
		return err
	}
	// Before anything is printed: whoever reads the furl may signal at once.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// SIGHUP would end the process by default; a gatherer has nothing to
	// reload, so say so and go on (log rotation and terminals send it).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Info("SIGHUP ignored: the gatherer has nothing to reload")
			}
		}
	}()
	lock, err := lockBasedir(cli.Basedir)
	if err != nil {
		return err
	}
	defer lock.Release()
	empty, err := gatherer.IsEmptyDir(cli.Basedir)
	if err != nil {
		return err
	}
	if empty {
		if err := gatherer.Create(cli.Basedir, gatherer.CreateOptions{Hostname: "127.0.0.1"}); err != nil {
			return err
		}
		log.Warn("created a new gatherer that listens on 127.0.0.1 only; to reach it from other hosts, create one with: gatherer create --basedir DIR --hostname HOST", "basedir", cli.Basedir)
	}
	var verbose io.Writer
	if c.Verbose {
		verbose = os.Stdout
	}
	cfg := gatherer.Config{
		Interval: c.Interval,
		Logger:   log,
		Verbose:  verbose,
	}
	if c.Timeout != nil {
		cfg.Timeout = *c.Timeout
	}
	if c.WriteAfter != nil {
		cfg.WriteAfter = *c.WriteAfter
	}
	// The HTTP listener comes first, so that a taken address fails the
	// command before the furl is announced.
	var (
		httpLn net.Listener
		hist   *web.History
	)
	if c.HTTP != "" {
		if httpLn, err = net.Listen("tcp", c.HTTP); err != nil {
			return fmt.Errorf("--http: %w", err)
		}
		defer httpLn.Close()
		hist = web.NewHistory(web.HistoryOptions{Interval: c.Interval})
		cfg.OnPoll = hist.Record
	}
	d, err := gatherer.Start(cli.Basedir, cfg, &tub.Options{Logger: log})
	if err != nil {
		return err
	}
	fmt.Printf("StatsGatherer: %s\n", d.Furl)
	used := d.Gatherer().Config()
	log.Info("gatherer running", "tubid", d.Listener.TubID(), "listen", d.Listener.Addr().String(),
		"interval", used.Interval, "timeout", used.Timeout, "write_after", used.WriteAfter)
	if httpLn != nil {
		srv := httpserve.New(web.New(d.Gatherer(), web.Options{History: hist, Interval: c.Interval, Logger: log}), httpserve.Options{Logger: log})
		go srv.Serve(httpLn)
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Shutdown(sctx)
		}()
		log.Info("http serving", "url", "http://"+httpLn.Addr().String()+"/")
	}

	err = d.Run(ctx)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	log.Info("gatherer stopped")
	return err
}

func main() {
	var cli CLI
	kctx := kong.Parse(&cli,
		kong.Name("gatherer"),
		kong.Vars{"version": version.String("gatherer")},
		kong.Description("Gather runtime statistics from capstats nodes into stats.json."),
		kong.UsageOnError(),
	)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cli.LogLevel}))
	kctx.Bind(log)
	if err := kctx.Run(&cli); err != nil {
		fmt.Fprintf(os.Stderr, "gatherer: error: %v\n", err)
		var ue *gatherer.UsageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
