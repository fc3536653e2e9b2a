// Command jsonmap is the baseline of the munin plugin benchmark: what a
// plugin costs that reads stats.json the obvious way, with encoding/json
// into a map. Like tahoe_stats it takes the file from the first environment
// variable whose name starts with "statsfile", and prints NAME.value lines
// for one stat (default load_monitor.avg_load) of every node.
//
//	statsfile=/path/stats.json jsonmap [STAT]
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

func main() {
	path := ""
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "statsfile") {
			path = v
			break
		}
	}
	if path == "" {
		fmt.Fprintln(os.Stderr, "jsonmap: no statsfile environment variable")
		os.Exit(1)
	}
	stat := "load_monitor.avg_load"
	if len(os.Args) > 1 {
		stat = os.Args[1]
	}
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "jsonmap:", err)
		os.Exit(1)
	}
	var file map[string]map[string]any
	if err := json.Unmarshal(b, &file); err != nil {
		fmt.Fprintln(os.Stderr, "jsonmap:", err)
		os.Exit(1)
	}
	w := bufio.NewWriter(os.Stdout)
	for id, node := range file {
		st, _ := node["stats"].(map[string]any)
		stats, _ := st["stats"].(map[string]any)
		if v, ok := stats[stat]; ok && v != nil {
			nick, _ := node["nickname"].(string)
			fmt.Fprintf(w, "%s_%s.value %v\n", nick, id[:4], v)
		}
	}
	w.Flush()
}
