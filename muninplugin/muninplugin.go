// Package muninplugin is the munin plugin tahoe_stats: it reads the
// gatherer's stats.json and prints what munin asks for, line for line as the
// original Tahoe-LAFS plugin (misc/munin/tahoe-stats.py) printed it, plus
// what munin users expect today.
//
// One executable serves every graph: munin runs it through a symlink named
// after the graph (tahoe_storage_allocated, ...; a trailing ".py" is
// ignored), and the name picks the graph from the original's table of 26
// (munin-graphs.json, embedded), or from capstats's additions
// (munin-graphs-additions.json: host load, memory, CPU and uptime, disk
// space, node uptime and CPU, in munin's category "capstats"). The stats file is the value of the first
// environment variable whose name starts with "statsfile" (munin's
// env.statsfile).
//
// As the original:
//   - config prints the graph's header lines, then, for every node in the
//     file (in file order) that has the stat, whatever its age, the graph's
//     series lines with %(name)s replaced by the node's field name;
//   - fetch (no argument) prints "NAME.value VALUE" for every such node whose
//     timestamp is at most 300 s old;
//   - a node "has" the stat when the stat is present and not null: a null
//     stat prints nothing, neither in config nor in fetch (the original
//     skipped None in both);
//   - NAME is <nickname>_<first 4 characters of the tub ID> with every
//     character outside [A-Za-z0-9] replaced by "_"; values are per node,
//     never summed.
//
// What changed:
//   - a node whose data is older than 300 s prints "NAME.value U" (munin's
//     "unknown") instead of vanishing from fetch, so config and fetch list the
//     same fields;
//   - a NAME that starts with a digit gets a "_" in front (munin field names
//     must match [a-zA-Z_][a-zA-Z0-9_]*); that is the only change to names;
//   - values print as plain decimal numbers (munin cannot read 1e-05), ints
//     as ints;
//   - installed as "tahoe_" it is a munin wildcard plugin with autoconf and
//     suggest; named "<anything>_multigraph" it emits every graph with data in
//     one run (multigraph); with MUNIN_CAP_DIRTYCONFIG=1, config also prints
//     the values;
//   - errors (no env.statsfile, a missing or corrupt file, an unknown graph
//     name) are one clear line and a non-zero exit.
//
// Kept from the original on purpose: two nodes with the same nickname whose
// tub IDs start with the same 4 characters get the same field name (munin
// then shows one line for both); give nodes distinct nicknames.
//
// munin-node 2.0 tells every plugin MUNIN_CAP_MULTIGRAPH=1 and decides at
// its start which plugins are multigraph plugins (by "multigraph" lines in
// their config), hiding those from masters without the capability. The
// multigraph plugin prints nothing while the stats file has no data, so
// restart munin-node once the gatherer has polled its nodes.
package muninplugin

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
)

//go:embed munin-graphs.json
var graphsJSON []byte

// additionsJSON holds the graphs capstats adds to the original's 26, for
// what capstats nodes report and the original never graphed: the host's
// load, memory, CPU and uptime (host.*, from capstats-node), the storage
// server's disk space, the node's uptime and CPU. They are in munin's
// category "capstats", and their graph_info says they are additions.
//
//go:embed munin-graphs-additions.json
var additionsJSON []byte

// Graph is one munin graph of the original plugin's table.
type Graph struct {
	Name     string   `json:"graph"`    // the plugin name munin runs, e.g. "tahoe_storage_allocated"
	StatID   string   `json:"statid"`   // the dotted stat name, e.g. "storage_server.allocated"
	Category string   `json:"category"` // "counters" or "stats": where the stat lives in a snapshot
	Type     string   `json:"type"`     // GAUGE or DERIVE, informative: the series lines already say it
	Header   []string `json:"header"`   // config lines printed once
	Series   []string `json:"series"`   // config lines printed per node, with %(name)s
	Addition bool     `json:"-"`        // not one of the original's 26 (munin-graphs-additions.json)
}

// Suffix is the graph's name after the wildcard prefix "tahoe_", which is
// what suggest prints.
func (g Graph) Suffix() string { return strings.TrimPrefix(g.Name, Prefix) }

const (
	// Prefix is the wildcard plugin's name: installed under it in munin's
	// plugin library, munin-node-configure links tahoe_<suffix> to it.
	Prefix = "tahoe_"
	// MultigraphSuffix marks the multigraph name, e.g. "tahoe_multigraph".
	MultigraphSuffix = "_multigraph"
	// StaleSeconds is how old a node's data may be and still be reported.
	StaleSeconds = 300
)

// MagicMarkers are munin's plugin markers, which munin-node-configure reads
// from the executable itself: each must be on a line of its own in the
// binary, so the string starts and ends with a newline, and the command
// references it so that the linker keeps it.
const MagicMarkers = "\n#%# family=auto\n#%# capabilities=autoconf suggest\n"

var (
	graphsOnce sync.Once
	graphs     []Graph
	byName     map[string]int
)

func loadGraphs() {
	if err := json.Unmarshal(graphsJSON, &graphs); err != nil {
		panic("muninplugin: embedded munin-graphs.json: " + err.Error())
	}
	var additions []Graph
	if err := json.Unmarshal(additionsJSON, &additions); err != nil {
		panic("muninplugin: embedded munin-graphs-additions.json: " + err.Error())
	}
	for i := range additions {
		additions[i].Addition = true
	}
	graphs = append(graphs, additions...)
	byName = make(map[string]int, len(graphs))
	for i, g := range graphs {
		byName[g.Name] = i
	}
}

// Graphs returns the 26 graphs of the original table, in its order, then
// capstats's additions. The caller must not modify them.
func Graphs() []Graph {
	graphsOnce.Do(loadGraphs)
	return graphs
}

// LookupGraph finds a graph by its plugin name.
func LookupGraph(name string) (Graph, bool) {
	graphsOnce.Do(loadGraphs)
	i, ok := byName[name]
	if !ok {
		return Graph{}, false
	}
	return graphs[i], true
}

// GraphNames lists the graph names, in table order.
func GraphNames() []string {
	var names []string
	for _, g := range Graphs() {
		names = append(names, g.Name)
	}
	return names
}

// InvocationName is the plugin name munin ran: the base name of argv[0]
// without a trailing ".py" (the original was tahoe-stats.py, and old setups
// link tahoe_storage_allocated.py style names).
func InvocationName(argv0 string) string {
	return strings.TrimSuffix(filepath.Base(argv0), ".py")
}

// UnknownGraphError is the error for a name that is no graph.
type UnknownGraphError struct{ Name string }

func (e *UnknownGraphError) Error() string {
	why := "is not a known graph"
	if e.Name == Prefix {
		why = "is the wildcard plugin; link it under a graph name"
	}
	return fmt.Sprintf("%q %s (the name the program runs under picks the graph); known graphs: %s, or a name ending in %q for all of them (multigraph)",
		e.Name, why, strings.Join(GraphNames(), ", "), MultigraphSuffix)
}
