package gatherer

import (
	"path/filepath"
	"testing"
	"time"

	"capstats/capnp/tub"
	"capstats/internal/fakenode"
	"capstats/internal/testutil"
	"capstats/statsfile"
)

// Gatherer.Close and Daemon.Close mean the same: polling ends, every
// connection closes, and the file is written a last time with every node
// down. Daemon.Close closes the listener besides.
func TestCloseWritesEveryNodeDown(t *testing.T) {
	for _, which := range []string{"Gatherer", "Daemon"} {
		t.Run(which, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "g")
			if err := Create(dir, CreateOptions{Hostname: "127.0.0.1"}); err != nil {
				t.Fatal(err)
			}
			d, err := Start(dir, Config{Interval: time.Hour}, tub.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Listener.Close()
			p, conn := fakenode.Connect(t, d.Furl, "n", fakenode.AnswerWith(sample))
			path := filepath.Join(dir, StatsFile)
			testutil.WaitFor(t, "the node polled", 20*time.Second, func() bool {
				f := d.Gatherer().File()
				return len(f.Nodes) == 1 && f.Nodes[0].Timestamp > 0
			})
			if which == "Gatherer" {
				err = d.Gatherer().Close()
			} else {
				err = d.Close()
			}
			if err != nil {
				t.Fatal(err)
			}
			f, err := statsfile.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(f.Nodes) != 1 || f.Nodes[0].TubID != p.TubID() || f.Nodes[0].Up {
				t.Errorf("after Close the file holds %+v, want the node, down", f.Nodes)
			}
			select {
			case <-conn.Done():
			case <-time.After(20 * time.Second):
				t.Error("the node's connection is still open after Close")
			}
			if m := d.Gatherer().Metrics(); m.Writes < 1 || m.LastWriteBytes <= 0 {
				t.Errorf("metrics after the last write: %+v", m)
			}
		})
	}
}

// A snapshot of Metrics is consistent: the last round's nodes are the
// ones that succeeded plus the ones that failed.
func TestMetricsSnapshot(t *testing.T) {
	d, _ := startDaemon(t, Config{Interval: 20 * time.Millisecond})
	fakenode.Connect(t, d.Furl, "ok", fakenode.AnswerWith(sample))
	fakenode.Connect(t, d.Furl, "bad", fakenode.Fail("no"))
	testutil.WaitFor(t, "a round of two nodes", 20*time.Second, func() bool {
		return d.Gatherer().Metrics().LastRoundPolled == 2
	})
	for range 50 {
		m := d.Gatherer().Metrics()
		if m.LastRoundOK+m.LastRoundFailed != m.LastRoundPolled || m.Rounds < 1 {
			t.Fatalf("inconsistent snapshot: %+v", m)
		}
		time.Sleep(time.Millisecond)
	}
}
