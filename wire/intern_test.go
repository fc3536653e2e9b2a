package wire

import (
	"fmt"
	"testing"
	"unsafe"

	"capstats/stats"
)

// Two replies with the same names share one copy of each name, and past
// the bound on interned names decoding still works.
func TestNamesInterned(t *testing.T) {
	s := stats.Snapshot{Counters: stats.Map{"storage_server.allocate": stats.Int(1)}, Stats: stats.Map{}}
	a, err := decode(encode(t, s), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	b, err := decode(encode(t, s), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	var na, nb string
	for k := range a.Counters {
		na = k
	}
	for k := range b.Counters {
		nb = k
	}
	if na != "storage_server.allocate" || unsafe.StringData(na) != unsafe.StringData(nb) {
		t.Errorf("names %q and %q are separate copies", na, nb)
	}

	for i := range maxInterned + 10 {
		name := fmt.Sprintf("made.up.%d", i)
		got, err := decode(encode(t, stats.Snapshot{Counters: stats.Map{name: stats.Int(int64(i))}}), DefaultLimits)
		if err != nil {
			t.Fatal(err)
		}
		if v, ok := got.Counters[name]; !ok || v.Int() != int64(i) {
			t.Fatalf("name %d: got %v", i, got.Counters)
		}
	}
	interned.RLock()
	n := len(interned.m)
	interned.RUnlock()
	if n > maxInterned {
		t.Errorf("%d names interned, bound is %d", n, maxInterned)
	}
}
