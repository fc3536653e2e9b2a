package node_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"capstats/node"
	"capstats/stats"
)

// A service embeds a provider, registers what it measures, and runs a
// Node that keeps it connected to the gatherer named in its basedir.
func Example() {
	p := node.NewProvider(node.ProviderOptions{})
	stop := node.RegisterBuiltins(p) // node.uptime, cpu_monitor.*, go.*
	defer stop()
	var allocated int64
	p.Register(node.ProducerFunc(func() stats.Map {
		return stats.Map{"storage_server.allocated": stats.Int(allocated)}
	}))
	p.Count("storage_server.allocate", 1) // on the service's hot path

	dir, err := os.MkdirTemp("", "example-node")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	n, err := node.Open(p, node.Config{BaseDir: dir, Nickname: "storage-1", LoadMonitor: true})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a real service runs until shutdown
	fmt.Println("Run:", n.Run(ctx))

	snap := p.Snapshot(context.Background())
	fmt.Println("storage_server.allocate =", snap.Counters.Map()["storage_server.allocate"].Int())
	fmt.Println("storage_server.allocated =", snap.Stats.Map()["storage_server.allocated"].Int())
	_, ok := snap.Stats.Map()["node.uptime"]
	fmt.Println("node.uptime reported:", ok)
	// Output:
	// Run: context canceled
	// storage_server.allocate = 1
	// storage_server.allocated = 0
	// node.uptime reported: true
}
