package statsd_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"capstats/node"
	"capstats/statsd"
)

// A Go service runs a StatsD listener on its own provider, so that helper
// scripts beside it can count things too.
func Example() {
	p := node.NewProvider(node.ProviderOptions{})
	srv, err := statsd.Listen("127.0.0.1:0", p, statsd.Options{})
	if err != nil {
		panic(err)
	}
	defer srv.Close()

	c, _ := net.Dial("udp", srv.Addr().String())
	c.Write([]byte("backup.runs:1|c\nbackup.runs:1|c|@0.5\nbackup.size:42|g\nnot a line\n"))
	c.Close()
	// Wait for the datagram: the bad line is counted as it is read.
	for i := 0; i < 500 && p.Counter(statsd.BadLinesCounter).Load() == 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}

	snap := p.Snapshot(context.Background())
	runs, _ := snap.Counters.Get("backup.runs")
	size, _ := snap.Stats.Get("backup.size")
	bad, _ := snap.Counters.Get(statsd.BadLinesCounter)
	fmt.Println(runs, size, bad)
	// Output: 3 42 1
}
