package node_test

import (
	"context"
	"log"
	"os"

	"capstats/node"
	"capstats/stats"
)

// A service embeds a provider, registers what it measures, and runs a
// Node that keeps it connected to the gatherer named in its basedir.
func Example() {
	ctx := context.Background()
	reserved := func() int64 { return 0 }

	p := node.NewProvider(nil)
	stop, err := node.RegisterBuiltins(p, nil) // node.uptime, cpu_monitor.*, go.*
	if err != nil {
		log.Fatal(err)
	}
	defer stop()
	p.Register(node.ProducerFunc(func() stats.Map {
		return stats.Map{"storage_server.allocated": stats.Int(reserved())}
	}))

	dir, _ := os.MkdirTemp("", "example-node")
	defer os.RemoveAll(dir)
	n, err := node.Open(p, node.Config{BaseDir: dir, Nickname: "storage-1"})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	cancel() // a real service runs until shutdown
	n.Run(ctx)

	p.Count("storage_server.allocate", 1)
}
