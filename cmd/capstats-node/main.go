// Command capstats-node runs a capstats node: it reports its own stats (uptime, CPU,
// load, Go runtime, and optionally a storage directory) to the stats
// gatherer whose furl is in BASEDIR/stats_gatherer.furl, reconnecting for
// ever. Without that file it runs without a gatherer until one appears.
//
// SIGHUP re-reads the furl file; SIGINT and SIGTERM stop the node.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"capstats/internal/httpserve"
	"capstats/internal/lockfile"
	"capstats/internal/version"
	"capstats/node"
	"capstats/nodehttp"
)

// CLI is the command line.
type CLI struct {
	Basedir    string           `help:"Directory holding the node's identity (private/node.pem) and the gatherer's furl (stats_gatherer.furl); created if missing." required:"" type:"path" placeholder:"DIR" env:"CAPSTATS_NODE_BASEDIR"`
	Nickname   string           `help:"Name shown for this node in the gatherer's output."`
	StorageDir string           `help:"Directory to report as storage_server.* stats (disk space and bytes used under it)." type:"path" name:"storage-dir"`
	MaxBackoff time.Duration    `help:"Longest wait between attempts to reach the gatherer." default:"600s" name:"max-backoff"`
	HTTP       string           `help:"Serve /statistics?t=json, /statistics?t=openmetrics and /metrics on this address, e.g. 127.0.0.1:9467 (off unless given)." name:"http" placeholder:"ADDR"`
	Verbose    bool             `help:"Log every connection attempt and other debug lines." short:"v"`
	Version    kong.VersionFlag `help:"Print the version and VCS revision, and exit."`
	Sidecar    `embed:""`

	// FurlCheck is how often the furl file is checked for changes.
	FurlCheck time.Duration `hidden:"" default:"5s" name:"furl-check"`
}

func main() {
	var cli CLI
	kong.Parse(&cli,
		kong.Name("capstats-node"),
		kong.Vars{"version": version.String("capstats-node")},
		kong.Description("Report this host's runtime statistics to a capstats stats gatherer."),
		kong.UsageOnError(),
	)
	level := slog.LevelInfo
	if cli.Verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)

	if err := run(ctx, &cli, log, hup); err != nil {
		fmt.Fprintf(os.Stderr, "capstats-node: error: %s\n", oneLine(err))
		os.Exit(1)
	}
}

// oneLine keeps a user-facing error on one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
}

// run is the daemon: a provider with the built-in producers, a node
// connected to the gatherer, until ctx is done. A signal on hup re-reads the
// furl file.
func run(ctx context.Context, cli *CLI, log *slog.Logger, hup <-chan os.Signal) error {
	if cli.MaxBackoff <= 0 {
		return errors.New("--max-backoff must be positive")
	}
	if err := makeBasedir(cli.Basedir); err != nil {
		return err
	}
	// Before the key is read or made: two nodes on one basedir would each
	// make a key, or evict each other from the gatherer every few seconds.
	lock, err := lockfile.Acquire(filepath.Join(cli.Basedir, lockFile))
	if err != nil {
		return err
	}
	defer lock.Release()

	p := node.NewProvider(node.ProviderOptions{Logger: log, ProducerTimeout: cli.producerTimeout()})
	stopBuiltins := node.RegisterBuiltins(p)
	defer stopBuiltins()
	if cli.StorageDir != "" {
		fi, err := os.Stat(cli.StorageDir)
		if err != nil {
			return fmt.Errorf("--storage-dir: %w", err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("--storage-dir %s is not a directory", cli.StorageDir)
		}
		sm := node.NewStorageMonitor(cli.StorageDir, node.StorageOptions{Logger: log})
		if err := p.Register(sm); err != nil {
			return err
		}
		sm.Start()
		defer sm.Stop()
	}
	stopSidecar, err := cli.register(p, log)
	if err != nil {
		return err
	}
	defer stopSidecar()

	n, err := node.Open(p, node.Config{
		BaseDir:           cli.Basedir,
		Nickname:          cli.Nickname,
		MaxBackoff:        cli.MaxBackoff,
		FurlCheckInterval: cli.FurlCheck,
		Logger:            log,
		LoadMonitor:       !cli.ownLoadMonitor(),
	})
	if err != nil {
		return err
	}

	if cli.HTTP != "" {
		ln, err := net.Listen("tcp", cli.HTTP)
		if err != nil {
			return fmt.Errorf("--http: %w", err)
		}
		srv := httpserve.New(nodehttp.Handler(p.Snapshot, nodehttp.Options{}), httpserve.Options{Logger: log})
		go srv.Serve(ln)
		defer srv.Close()
		log.Info("http serving", "url", "http://"+ln.Addr().String()+"/statistics?t=json")
	}

	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Info("SIGHUP: re-reading the furl file", "file", n.FurlPath())
				n.Reload()
			}
		}
	}()

	log.Info("node running", "tubid", n.TubID(), "basedir", cli.Basedir, "nickname", cli.Nickname)
	err = n.Run(ctx)
	log.Info("node stopped")
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return nil // stopped by a signal, as asked
	}
	return err
}

// lockFile, in the basedir, is flocked by a running node.
const lockFile = "node.lock"

// makeBasedir creates the base directory (mode 0700) if it is missing.
func makeBasedir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create basedir: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("basedir: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("basedir %s is not a directory", dir)
	}
	return nil
}
