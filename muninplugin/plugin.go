package muninplugin

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"capstats/statsfile"
)

// Plugin is one run of the plugin, with everything it reads from the
// process passed in, so that tests control it.
type Plugin struct {
	// Name is the name munin runs the plugin under (InvocationName of
	// argv[0]): a graph name, "tahoe_" (the wildcard plugin), or a name
	// ending in "_multigraph".
	Name string
	// Env is the environment as "KEY=value" strings, in the process's
	// order (os.Environ()). env.statsfile and munin's MUNIN_CAP_* are read
	// from it.
	Env []string
	// StatsFile, when not empty, is used instead of the environment.
	StatsFile string
	// Now is the clock for the staleness check; nil means time.Now.
	Now func() time.Time
	// Stdout receives the output, written once at the end; nil means
	// os.Stdout, where munin reads it.
	Stdout io.Writer

	content []byte // tests: the stats file's content, instead of reading it
}

// Run does what munin asks with mode: "" or "fetch" (the values),
// "config", "autoconf" or "suggest". autoconf always succeeds (it answers
// "no (reason)" instead). Any error means nothing useful was printed; the
// caller reports it on one line and exits non-zero.
func (p *Plugin) Run(mode string) error {
	switch mode {
	case "", "fetch", "config":
	case "autoconf":
		return p.write(p.autoconf())
	case "suggest":
		b, err := p.suggest()
		if err != nil {
			return err
		}
		return p.write(b)
	default:
		return fmt.Errorf("unknown argument %q: want config, autoconf, suggest, fetch or none (for the values)", mode)
	}
	multi := strings.HasSuffix(p.Name, MultigraphSuffix)
	var gs []Graph
	if multi {
		if p.getenv("MUNIN_CAP_MULTIGRAPH") != "1" {
			return fmt.Errorf("%s is the multigraph plugin, and munin did not announce multigraph support (MUNIN_CAP_MULTIGRAPH=1); use a munin master of version 1.4 or later, or link the single graphs (tahoe_storage_allocated, ...) instead", p.Name)
		}
		gs = Graphs()
	} else {
		g, ok := LookupGraph(p.Name)
		if !ok {
			return &UnknownGraphError{Name: p.Name}
		}
		gs = []Graph{g}
	}
	f, err := p.load(gs)
	if err != nil {
		return err
	}
	r := newRenderer(f, p.now())
	config := mode == "config"
	dirty := config && p.getenv("MUNIN_CAP_DIRTYCONFIG") == "1"
	var b []byte
	for _, g := range gs {
		if multi {
			if !r.hasData(g) {
				continue
			}
			b = append(b, "multigraph "...)
			b = append(b, g.Name...)
			b = append(b, '\n')
		}
		if config {
			b = r.appendConfig(b, g)
		}
		if !config || dirty {
			b = r.appendFetch(b, g)
		}
	}
	return p.write(b)
}

func (p *Plugin) write(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	out := p.Stdout
	if out == nil {
		out = os.Stdout
	}
	if _, err := out.Write(b); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

func (p *Plugin) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// getenv returns the value of the last KEY=value for key in Env (as a
// shell would see it), or "".
func (p *Plugin) getenv(key string) string {
	v := ""
	for _, kv := range p.Env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}

// errNoStatsFile: neither env.statsfile nor StatsFile.
var errNoStatsFile = errors.New("no stats file configured: set env.statsfile in a [tahoe_*] section of munin's plugin-conf.d (no environment variable starting with \"statsfile\" is set)")

// statsPath is StatsFile, or the value of the first environment variable
// whose name starts with "statsfile", as the original chose it.
func (p *Plugin) statsPath() (string, error) {
	if p.StatsFile != "" {
		return p.StatsFile, nil
	}
	for _, kv := range p.Env {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "statsfile") {
			if v == "" {
				return "", fmt.Errorf("environment variable %s (env.%s) is empty: it must name the gatherer's stats.json", k, k)
			}
			return v, nil
		}
	}
	return "", errNoStatsFile
}

// load reads the stats file, keeping only the stats of gs.
func (p *Plugin) load(gs []Graph) (*statsfile.File, error) {
	path, err := p.statsPath()
	if err != nil {
		return nil, err
	}
	want := make(map[[2]string]bool, len(gs))
	for _, g := range gs {
		want[[2]string{g.Category, g.StatID}] = true
	}
	keep := func(category, name string) bool { return want[[2]string{category, name}] }
	if p.content != nil {
		f, err := statsfile.DecodeFiltered(bytes.NewReader(p.content), keep)
		if err != nil {
			return nil, fmt.Errorf("stats file %s: %w", path, err)
		}
		return f, nil
	}
	return statsfile.LoadFiltered(path, keep)
}

// autoconf answers munin-node-configure: one line, "yes" or "no (reason)".
func (p *Plugin) autoconf() []byte {
	f, err := p.load(Graphs())
	if err != nil {
		return []byte("no (" + oneLine(err.Error()) + ")\n")
	}
	r := newRenderer(f, time.Time{})
	for _, g := range Graphs() {
		if r.hasData(g) {
			return []byte("yes\n")
		}
	}
	path, _ := p.statsPath()
	return []byte("no (stats file " + oneLine(path) + " holds no data for any tahoe graph yet)\n")
}

// suggest lists the suffixes of the graphs that have data: munin links
// tahoe_<suffix> to the wildcard plugin tahoe_ for each.
func (p *Plugin) suggest() ([]byte, error) {
	f, err := p.load(Graphs())
	if err != nil {
		return nil, err
	}
	r := newRenderer(f, time.Time{})
	var b []byte
	for _, g := range Graphs() {
		if r.hasData(g) {
			b = append(b, g.Suffix()...)
			b = append(b, '\n')
		}
	}
	return b, nil
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
