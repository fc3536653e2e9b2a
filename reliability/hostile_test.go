package reliability

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"capstats/capnp/statsrpc"
	"capstats/internal/fakenode"
	"capstats/internal/testutil"
	"capstats/statsfile"
)

func lastError(t *testing.T, dir, tubID string) (string, bool, bool) {
	f, err := statsfile.Load(filepath.Join(dir, "stats.json"))
	if err != nil {
		return "", false, false
	}
	for _, n := range f.Nodes {
		if n.TubID == tubID {
			return n.LastError, n.Up, true
		}
	}
	return "", false, false
}

// rawEntries answers with n stats named by name(i), put directly on the
// wire so that a hostile node can send what wire.FromSnapshot never would
// (duplicates, bad UTF-8).
func rawEntries(n int, name func(i int) string) fakenode.Answer {
	var names []byte
	for i := range n {
		names = append(append(names, name(i)...), 0)
	}
	return fakenode.Raw(names, n, func(i int, v statsrpc.Value) { v.SetInt(int64(i)) })
}

// TestHostileProviders feeds the gatherer binary replies no honest node
// sends. Each is refused with the reason recorded, the gatherer's peak
// memory stays bounded, and an honest node beside them is polled on time.
func TestHostileProviders(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the gatherer binary against hostile providers")
	}
	dir := createGatherer(t)
	g := startGatherer(t, dir, "--interval", "1s")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	honest, _ := fakenode.Connect(t, g.furl, "honest", fakenode.AnswerWith(fakenode.SnapshotOf(20)))

	cases := []struct {
		name   string
		answer fakenode.Answer
		want   string
		closes bool // over the message limit: the connection is dropped
	}{
		{"a million entries", rawEntries(1_000_000, func(i int) string { return "m" }), "", true},
		{"a 600 KB name", rawEntries(1, func(int) string { return strings.Repeat("n", 600<<10) }), "limit is 256", false},
		{"a 2 MB name, over the message limit", rawEntries(1, func(int) string { return strings.Repeat("n", 2<<20) }), "", true},
		{"invalid UTF-8", rawEntries(1, func(int) string { return "bad\xff\xfe" }), "UTF-8", false},
		{"duplicate names", rawEntries(3, func(int) string { return "same.name" }), "duplicate", false},
		{"2,001 entries", rawEntries(2_001, func(i int) string {
			return "e." + strings.Repeat("x", i%50) + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676))
		}), "limit is 2000", false},
		{"empty name", rawEntries(1, func(int) string { return "" }), "empty name", false},
		{"more names than values", fakenode.Raw(fakenode.Names("a", "b"), 1, func(int, statsrpc.Value) {}), "more names than the 1 values", false},
		{"fewer names than values", fakenode.Raw(fakenode.Names("a"), 2, func(int, statsrpc.Value) {}), "1 names for 2 values", false},
		{"names not NUL-terminated", fakenode.Raw([]byte("a"), 1, func(int, statsrpc.Value) {}), "0 names for 1 values", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := fakenode.New(t, c.answer)
			conn, err := p.Attach(ctx, g.furl, "hostile")
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			testutil.WaitFor(t, "error recorded", 30*time.Second, func() bool {
				e, up, ok := lastError(t, dir, p.TubID())
				if !ok || e == "" {
					return false
				}
				if c.closes {
					return !up
				}
				return strings.Contains(e, c.want)
			})
			if !c.closes {
				select {
				case <-conn.Done():
					t.Fatal("a refused reply closed the connection")
				default:
				}
				calls := p.Calls()
				testutil.WaitFor(t, "still polled", 10*time.Second, func() bool { return p.Calls() > calls })
			}
			honestCalls := honest.Calls()
			testutil.WaitFor(t, "honest node still polled", 10*time.Second, func() bool { return honest.Calls() > honestCalls })
			if e, up, _ := lastError(t, dir, honest.TubID()); e != "" || !up {
				t.Fatalf("honest node affected: up=%v err=%q", up, e)
			}
		})
	}
	// Peak memory: the gatherer never held a million entries, nor anything
	// near the size of the hostile replies.
	if rss := g.peakRSS(t); rss > 128<<20 {
		t.Errorf("gatherer peak RSS %d MiB, want < 128 MiB", rss>>20)
	}
	g.stop(t)
}

// TestProvideLoop calls provide 10,000 times in a row on one connection.
func TestProvideLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 provide calls")
	}
	dir := createGatherer(t)
	g := startGatherer(t, dir, "--interval", "1s")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	honest, _ := fakenode.Connect(t, g.furl, "honest", fakenode.AnswerWith(fakenode.SnapshotOf(20)))

	p := fakenode.New(t, fakenode.AnswerWith(fakenode.SnapshotOf(5)))
	conn, err := p.Attach(ctx, g.furl, "looper")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	gcap := statsrpc.Gatherer(conn.Object())
	prov := statsrpc.Provider_ServerToClient(p)
	defer prov.Release()
	for i := 0; i < 10_000; i++ {
		fut, rel := gcap.Provide(ctx, func(a statsrpc.Gatherer_provide_Params) error {
			a.SetNickname("looper")
			return a.SetProvider(prov.AddRef())
		})
		if i%100 == 99 {
			if _, err := fut.Struct(); err != nil {
				t.Fatalf("provide %d: %v", i, err)
			}
		}
		rel()
	}
	honestCalls := honest.Calls()
	testutil.WaitFor(t, "honest node still polled", 10*time.Second, func() bool { return honest.Calls() > honestCalls+1 })
	f, err := statsfile.Load(filepath.Join(dir, "stats.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Nodes) != 2 {
		t.Errorf("%d entries after 10,000 provides from one node, want 2", len(f.Nodes))
	}
	if rss := g.peakRSS(t); rss > 128<<20 {
		t.Errorf("gatherer peak RSS %d MiB, want < 128 MiB", rss>>20)
	}
	g.stop(t)
}
