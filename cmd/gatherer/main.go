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
	"capstats/muninplugin"
	"capstats/statsfile"
)

// CLI is the command line. `gatherer --basedir DIR` alone (the hidden
// default command, start) runs the gatherer and creates DIR first if it is
// missing or empty; `gatherer run` only runs an existing one, so that a
// mistyped basedir is an error, not a new gatherer.
type CLI struct {
	Basedir  string           `help:"Directory holding the gatherer's key, furl and stats.json." required:"" type:"path" placeholder:"DIR" env:"CAPSTATS_GATHERER_BASEDIR"`
	LogLevel slog.Level       `help:"Log level: debug, info, warn, error." default:"info" name:"log-level"`
	Version  kong.VersionFlag `help:"Print the version and VCS revision, and exit."`

	Create      CreateCmd      `cmd:"" help:"Create a new gatherer basedir."`
	Start       StartCmd       `cmd:"" default:"withargs" hidden:"" help:"Run the gatherer, creating a loopback-only one in a missing or empty basedir."`
	Run         RunCmd         `cmd:"" help:"Run the gatherer of an existing basedir (gatherer --basedir DIR alone also creates a missing one)."`
	Furl        FurlCmd        `cmd:"" help:"Print the gatherer's furl."`
	Status      StatusCmd      `cmd:"" help:"Print whether the gatherer runs, which stats.json was read and when it was written, and a table of its nodes."`
	Forget      ForgetCmd      `cmd:"" help:"Remove a decommissioned node from stats.json, also while the gatherer runs."`
	RotateFurl  RotateFurlCmd  `cmd:"" name:"rotate-furl" help:"Give the gatherer a new furl and refuse the old one (at once if it runs)."`
	SetLocation SetLocationCmd `cmd:"" name:"set-location" help:"Change the gatherer's port or the hints nodes use to reach it, keeping its tub ID."`
}

// StatusCmd prints the node table.
type StatusCmd struct{}

func (c *StatusCmd) Run(cli *CLI) error {
	if err := gatherer.CheckBasedir(cli.Basedir); err != nil {
		return err
	}
	path := filepath.Join(cli.Basedir, gatherer.StatsFile)
	now := time.Now()
	info, runErr := gatherer.Running(cli.Basedir)
	switch {
	case runErr == nil:
		fmt.Printf("gatherer: running, pid %d, started %s, %d of %d nodes connected\n", info.PID, gatherer.Age(float64(info.Started.UnixNano())/1e9, now), info.Connected, info.Known)
	case errors.Is(runErr, gatherer.ErrNotRunning):
		fmt.Printf("gatherer: not running (nothing answers on %s)\n", filepath.Join(cli.Basedir, gatherer.ControlSocket))
	default:
		fmt.Printf("gatherer: unknown (%v)\n", runErr)
	}
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no stats file %s yet: it is written once the gatherer has run", path)
	}
	if err != nil {
		return err
	}
	f, err := statsfile.Load(path)
	if err != nil {
		return err
	}
	fmt.Printf("stats file: %s, written %s (%s)\n", path, gatherer.Age(float64(fi.ModTime().UnixNano())/1e9, now), fi.ModTime().UTC().Format(time.RFC3339))
	if runErr == nil && fi.ModTime().Before(info.Started) {
		fmt.Println("  (by the gatherer's previous run: the first write comes once the nodes that were up have answered, within 10s)")
	}
	fmt.Println()
	return gatherer.WriteTable(os.Stdout, f, now)
}

// ForgetCmd removes a node.
type ForgetCmd struct {
	Node string `arg:"" help:"The node's tub ID, or its nickname if no other node has it." placeholder:"TUBID|NICKNAME"`
}

func (c *ForgetCmd) Run(cli *CLI) error {
	// The munin field name depends on the other nodes (a colliding name is
	// lengthened), so it is worked out from the file as it was.
	before, _ := statsfile.Load(filepath.Join(cli.Basedir, gatherer.StatsFile))
	n, live, err := gatherer.ForgetNode(cli.Basedir, c.Node)
	if err != nil {
		return err
	}
	where := "from the running gatherer and " + filepath.Join(cli.Basedir, gatherer.StatsFile)
	if !live {
		where = "from " + filepath.Join(cli.Basedir, gatherer.StatsFile) + " (the gatherer is not running)"
	}
	field := muninFieldName(before, n)
	fmt.Printf("forgot node %q (%s): removed %s.\n", n.Nickname, n.TubID, where)
	fmt.Printf("munin keeps its history as the field %s; to delete that too, on the munin master:\n", field)
	fmt.Printf("  rm /var/lib/munin/*/*-tahoe_*-%s-[gd].rrd\n", field)
	return nil
}

// muninFieldName is n's field name among the nodes of f, or its plain
// FieldName when f is not there or lacks n.
func muninFieldName(f *statsfile.File, n statsfile.Node) string {
	if f != nil {
		names := muninplugin.FieldNames(f)
		for i := range f.Nodes {
			if f.Nodes[i].TubID == n.TubID {
				return names[i]
			}
		}
	}
	return muninplugin.FieldName(n.Nickname, n.TubID)
}

// RotateFurlCmd replaces the swiss number.
type RotateFurlCmd struct{}

func (c *RotateFurlCmd) Run(cli *CLI) error {
	f, live, err := gatherer.RotateFurl(cli.Basedir)
	if err != nil {
		return err
	}
	fmt.Println(f)
	if live {
		fmt.Println("The running gatherer refuses the old furl from now on, and has disconnected the nodes that came with it.")
	} else {
		fmt.Println("The gatherer is not running: it uses the new furl when it starts, and refuses the old one.")
	}
	fmt.Printf("The new furl is in %s. On each node, write it into the node's furl file, e.g.\n", filepath.Join(cli.Basedir, gatherer.FurlFile))
	fmt.Println("  install -m 600 /dev/stdin /var/lib/capstats/node/stats_gatherer.furl <<< 'capnp://...'")
	fmt.Println("A running node picks the new file up within seconds (or at once on SIGHUP).")
	return nil
}

// SetLocationCmd moves the gatherer.
type SetLocationCmd struct {
	Location string `help:"Connection hints nodes use, e.g. tcp:stats.example.org:3456 (the location file)." placeholder:"HINTS"`
	Port     string `help:"Where to listen: tcp:PORT, tcp:PORT:interface=ADDR or PORT (the port file)." placeholder:"PORT"`
}

func (c *SetLocationCmd) Run(cli *CLI) error {
	f, err := gatherer.SetLocation(cli.Basedir, c.Location, c.Port)
	if err != nil {
		return err
	}
	if c.Port != "" {
		fmt.Printf("port file: %s\n", c.Port)
	}
	if c.Location != "" {
		fmt.Printf("location file: %s\n", c.Location)
	}
	if info, err := gatherer.Running(cli.Basedir); err == nil {
		fmt.Printf("The running gatherer (pid %d) moves when restarted, e.g. systemctl restart capstats-gatherer.\n", info.PID)
	} else {
		fmt.Println("The gatherer moves when it next starts.")
	}
	if f.Swissnum == "" {
		fmt.Println("It has no furl yet; it makes one when it first starts.")
		return nil
	}
	if c.Location != "" {
		fmt.Printf("Its tub ID and swiss number stay; the nodes need the new furl, with the new hints:\n%s\n", f)
	}
	return nil
}

// CreateCmd makes a basedir.
type CreateCmd struct {
	Hostname string `help:"Host name nodes use to reach this gatherer; a free TCP port is picked." placeholder:"HOST"`
	Location string `help:"Connection hints nodes use, e.g. tcp:stats.example.org:3456 (with --port)." placeholder:"HINTS"`
	Port     string `help:"Where to listen: tcp:PORT, tcp:PORT:interface=ADDR or PORT (with --location)." placeholder:"PORT"`
}

// StartCmd is `gatherer --basedir DIR` with no command: run, creating DIR.
type StartCmd struct {
	RunCmd `embed:""`
}

func (c *StartCmd) Run(cli *CLI, log *slog.Logger) error {
	return c.RunCmd.run(cli, log, true)
}

// RunCmd runs the gatherer.
type RunCmd struct {
	Interval    time.Duration  `help:"Time between poll rounds (at least 1s)." default:"60s"`
	Timeout     *time.Duration `help:"Timeout of one poll, at least 1s and at most --interval (default: the smaller of 30s and --interval)." placeholder:"DURATION"`
	WriteAfter  *time.Duration `help:"Longest a round waits for slow nodes before writing stats.json, at least 1s and at most --interval (default: the smaller of 5s and --timeout)." name:"write-after" placeholder:"DURATION"`
	Verbose     bool           `help:"Print connect/disconnect lines and a line per poll round." short:"v"`
	HTTP        string         `help:"Serve /metrics (OpenMetrics, for Prometheus), /stats.json and a status page on this address, e.g. 127.0.0.1:8080 (off unless given)." name:"http" placeholder:"ADDR"`
	MaxNodes    int            `help:"Most node entries kept: a new node then replaces the one down longest, and is refused while all are up." default:"10000" name:"max-nodes"`
	ForgetAfter time.Duration  `help:"Drop the entry of a node down this long (default 0: keep entries for ever, as the original did)." name:"forget-after" placeholder:"DURATION"`
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
	if c.MaxNodes < 1 {
		return &gatherer.UsageError{Msg: fmt.Sprintf("--max-nodes %d: must be at least 1", c.MaxNodes)}
	}
	if c.ForgetAfter != 0 && c.ForgetAfter < time.Second {
		return &gatherer.UsageError{Msg: fmt.Sprintf("--forget-after %s: must be at least 1s (or 0, to keep entries for ever)", c.ForgetAfter)}
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
	return c.run(cli, log, false)
}

func (c *RunCmd) run(cli *CLI, log *slog.Logger, create bool) error {
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
	if empty, _ := gatherer.IsEmptyDir(cli.Basedir); empty && !create {
		return gatherer.CheckBasedir(cli.Basedir) // run never makes or writes into one
	}
	lock, err := lockBasedir(cli.Basedir)
	if err != nil {
		return err
	}
	defer lock.Release()
	empty, err := gatherer.IsEmptyDir(cli.Basedir)
	if err != nil {
		return err
	}
	switch {
	case empty && create:
		if err := gatherer.Create(cli.Basedir, gatherer.CreateOptions{Hostname: "127.0.0.1"}); err != nil {
			return err
		}
	case empty:
		return gatherer.CheckBasedir(cli.Basedir)
	}
	var verbose io.Writer
	if c.Verbose {
		verbose = os.Stdout
	}
	cfg := gatherer.Config{
		Interval:    c.Interval,
		MaxNodes:    c.MaxNodes,
		ForgetAfter: c.ForgetAfter,
		Logger:      log,
		Verbose:     verbose,
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
		cfg.OnForget = hist.Forget
	}
	// Every node is a descriptor; the listener keeps a reserve of them free
	// for the stats file and HTTP.
	if nofile, err := tub.RaiseFileLimit(); err != nil {
		log.Warn("could not raise the open-files limit", "limit", nofile, "err", err)
	}
	d, err := gatherer.Start(cli.Basedir, cfg, tub.Options{Logger: log})
	if err != nil {
		return err
	}
	fmt.Printf("StatsGatherer: %s\n", d.Furl)
	if empty {
		port := d.Listener.Port()
		fmt.Fprintf(os.Stderr, `created a new gatherer in %[1]s, listening on 127.0.0.1:%[2]d;
to reach it from other hosts: gatherer set-location --basedir %[1]s --location tcp:HOST:%[2]d --port tcp:%[2]d
(HOST: this host's name as the nodes know it), then restart it and give the nodes the furl it prints.
The furl for nodes on this host: %[3]s
`, cli.Basedir, port, filepath.Join(cli.Basedir, gatherer.FurlFile))
	}
	used := d.Gatherer().Config()
	log.Info("gatherer running", "tubid", d.Listener.TubID(), "listen", d.Listener.Addr().String(),
		"interval", used.Interval, "timeout", used.Timeout, "write_after", used.WriteAfter,
		"max_nodes", used.MaxNodes, "forget_after", used.ForgetAfter)
	if httpLn != nil {
		srv := httpserve.New(web.New(d.Gatherer(), web.Options{History: hist, Interval: c.Interval, Logger: log, Tub: d.Listener}), httpserve.Options{Logger: log})
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
		kong.Description("Gather runtime statistics from capstats nodes into stats.json.\n\n`gatherer --basedir DIR` with no command runs the gatherer, and first creates a loopback-only one if DIR is missing or empty."),
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
