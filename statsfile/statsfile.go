// Package statsfile reads and writes stats.json, the gatherer's record of
// the latest sample from every node, in the format the original Tahoe-LAFS
// stats gatherer wrote so that existing munin setups keep working:
//
//	{"<tubid>": {"timestamp": 1700000000.25,
//	             "nickname": "storage-1",
//	             "stats": {"counters": {"storage_server.allocate": 12},
//	                       "stats": {"storage_server.allocated": 0, "x": null}},
//	             "up": true, "last_poll": 1700000000.25,
//	             "last_error": "", "poll_seconds": 0.0011}}
//
// The first three keys of a node are the original's; "up", "last_poll",
// "last_error" and "poll_seconds" are capstats additions, which readers of
// the original format ignore. Files written by the original (only the first
// three keys) read back with the additions zero.
//
// The package is the one place that knows the file format: the gatherer
// writes it (WriteFile, once per poll round, atomically) and the munin plugin
// reads it (Load, once per run). It imports only the standard library,
// capstats/stats and capstats/internal/atomicfile (WriteFile's atomic
// replace, itself standard library only), so that the plugin starts fast.
package statsfile

import (
	"capstats/stats"
)

// Node is one provider's entry, keyed in the file by TubID.
type Node struct {
	TubID       string         // the object key, not a field
	Timestamp   float64        // "timestamp": epoch seconds when the last good reply arrived
	Nickname    string         // "nickname"
	Stats       stats.Snapshot // "stats": {"counters": {...}, "stats": {...}}
	Up          bool           // "up"
	LastPoll    float64        // "last_poll": epoch seconds of the last attempt
	LastError   string         // "last_error": "" when none
	PollSeconds float64        // "poll_seconds": duration of the last call
}

// File is the whole stats file. Nodes are in file order, which matters: the
// munin plugin lists nodes in that order, as the original did (a Python dict
// keeps its keys in file order).
type File struct {
	Nodes []Node
}
