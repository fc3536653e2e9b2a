// Command tahoe_stats is the munin plugin for the capstats gatherer's
// stats.json, a drop-in replacement for Tahoe-LAFS's tahoe-stats.py: link it
// into munin's plugins directory under a graph name (tahoe_storage_allocated,
// ...), install it as tahoe_ in munin's plugin library for
// munin-node-configure, or link it as tahoe_multigraph for all graphs in one
// run. See package capstats/muninplugin for what it prints.
//
// It imports only the stats file reader and the munin output (no RPC code),
// so that it starts fast: munin runs it once per graph every five minutes.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/alecthomas/kong"

	"capstats/internal/version"
	"capstats/muninplugin"
)

// description is the help text. It carries munin's magic markers, which
// munin-node-configure reads from this executable (on lines of their own);
// using the constant here keeps it in the binary.
const description = `Munin plugin for the capstats stats gatherer's stats.json.

Run by munin under a graph's name (a symlink such as tahoe_storage_allocated),
it prints that graph's config or values. Installed as "tahoe_" in munin's
plugin library it is a wildcard plugin (autoconf, suggest); linked as
"tahoe_multigraph" it prints every graph in one run. The stats file is taken
from env.statsfile in munin's plugin-conf.d:

  [tahoe_*]
  env.statsfile /var/lib/capstats/gatherer/stats.json

Munin plugin markers:` + muninplugin.MagicMarkers

type cli struct {
	Mode      string           `arg:"" optional:"" help:"What munin asks: config, autoconf or suggest; nothing (or fetch) for the values."`
	Graph     string           `placeholder:"NAME" help:"Graph to print, instead of the one named by how the program is called (tahoe_storage_allocated, tahoe_multigraph, ...)."`
	Statsfile string           `placeholder:"PATH" help:"The gatherer's stats.json, instead of env.statsfile."`
	List      bool             `help:"List the graph names and exit."`
	Version   kong.VersionFlag `help:"Print the version and VCS revision, and exit."`
}

type exitCode int

func main() {
	// A short-lived process that reads one file: collecting garbage would
	// only slow it down, unless the file is huge.
	debug.SetGCPercent(-1)
	debug.SetMemoryLimit(256 << 20)
	os.Exit(run(os.Args, os.Environ(), os.Stdout, os.Stderr))
}

// run is the whole program; it returns the exit status. Errors are one line
// on stderr, prefixed with the plugin name (munin-node logs them).
func run(args, env []string, stdout, stderr io.Writer) (code int) {
	name := "tahoe_stats"
	if len(args) > 0 {
		name = muninplugin.InvocationName(args[0])
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "%s: %s\n", name, strings.ReplaceAll(err.Error(), "\n", " "))
		return 1
	}
	defer func() {
		if r := recover(); r != nil {
			if c, ok := r.(exitCode); ok {
				code = int(c)
				return
			}
			// A bug: still one line for munin's log, not a stack trace.
			code = fail(fmt.Errorf("internal error: %v (please report this)", r))
		}
	}()
	var c cli
	parser, err := kong.New(&c,
		kong.Name(name),
		kong.Vars{"version": version.String("tahoe_stats")},
		kong.Description(description),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { panic(exitCode(code)) }),
	)
	if err != nil {
		return fail(err)
	}
	if len(args) > 0 {
		args = args[1:]
	}
	if _, err := parser.Parse(args); err != nil {
		var pe *kong.ParseError
		if errors.As(err, &pe) {
			fmt.Fprintf(stderr, "%s: %s (see --help)\n", name, err)
			return 2
		}
		return fail(err)
	}
	if c.List {
		fmt.Fprintln(stdout, strings.Join(muninplugin.GraphNames(), "\n"))
		return 0
	}
	p := &muninplugin.Plugin{Name: name, Env: env, StatsFile: c.Statsfile, Stdout: stdout}
	if c.Graph != "" {
		p.Name = c.Graph
	}
	if err := p.Run(c.Mode); err != nil {
		return fail(err)
	}
	return 0
}
