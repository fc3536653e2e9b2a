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
	var d Decoder
	s := stats.Snapshot{Counters: stats.SetOf(stats.Map{"storage_server.allocate": stats.Int(1)}), Stats: stats.SetOf(stats.Map{})}
	a, err := decodeWith(&d, encode(t, s), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	b, err := decodeWith(&d, encode(t, s), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	var na, nb string
	for k := range a.Counters.All() {
		na = k
	}
	for k := range b.Counters.All() {
		nb = k
	}
	if na != "storage_server.allocate" || unsafe.StringData(na) != unsafe.StringData(nb) {
		t.Errorf("names %q and %q are separate copies", na, nb)
	}

	for i := range maxInterned + 10 {
		name := fmt.Sprintf("made.up.%d", i)
		got, err := decodeWith(&d, encode(t, stats.Snapshot{Counters: stats.SetOf(stats.Map{name: stats.Int(int64(i))})}), DefaultLimits)
		if err != nil {
			t.Fatal(err)
		}
		if v, ok := got.Counters.Map()[name]; !ok || v.Int() != int64(i) {
			t.Fatalf("name %d: got %v", i, got.Counters)
		}
	}
	d.interned.mu.Lock()
	n := len(d.interned.all)
	d.interned.mu.Unlock()
	if n > maxInterned {
		t.Errorf("%d names interned, bound is %d", n, maxInterned)
	}
}

// A name already interned skips CheckName but not the length limit of the
// reply at hand.
func TestInternedNameStillLengthChecked(t *testing.T) {
	var d Decoder // an empty table of its own
	s := stats.Snapshot{Counters: stats.SetOf(stats.Map{"interned.then.too.long": stats.Int(1)}), Stats: stats.SetOf(stats.Map{})}
	for range 3 { // enough lookups for the name to be published
		if _, err := decodeWith(&d, encode(t, s), DefaultLimits); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := d.interned.lookup([]byte("interned.then.too.long")); !ok {
		t.Fatal("name not interned")
	}
	if _, err := decodeWith(&d, encode(t, s), Limits{MaxNameLen: 8}); err == nil {
		t.Error("a known name over MaxNameLen was accepted")
	}
}
