// Command mkstatsfile writes a synthetic stats.json of N up nodes with 20
// counters and 20 stats each, answered just now (bench.SyntheticFile), for
// timing the munin plugin on a file of known size.
//
//	mkstatsfile -n 1000 -o /tmp/stats.json
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"capstats/bench"
	"capstats/statsfile"
)

func main() {
	n := flag.Int("n", 1000, "number of nodes")
	out := flag.String("o", "stats.json", "file to write")
	flag.Parse()
	if *n < 0 || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := statsfile.WriteFile(*out, bench.SyntheticFile(*n, time.Now())); err != nil {
		fmt.Fprintln(os.Stderr, "mkstatsfile:", err)
		os.Exit(1)
	}
}
