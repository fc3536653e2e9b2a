package stats

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestNewNamesRefusesRepeats(t *testing.T) {
	if _, err := NewNames([]string{"a", "b", "a"}); err == nil || !strings.Contains(err.Error(), `duplicate name "a"`) {
		t.Fatalf("NewNames with a repeat: %v", err)
	}
	n, err := NewNames([]string{"b", "a"})
	if err != nil {
		t.Fatal(err)
	}
	if n.Len() != 2 || n.At(0) != "b" || n.Index("a") != 1 || n.Index("c") != -1 {
		t.Fatalf("names %v: Len %d, Index(a) %d, Index(c) %d", n.List(), n.Len(), n.Index("a"), n.Index("c"))
	}
}

// Get finds every name, in Sets small enough to scan and large enough to
// index, and nothing in the zero Set.
func TestSetGet(t *testing.T) {
	for _, size := range []int{1, 8, 9, 100} {
		m := Map{}
		for i := range size {
			m[fmt.Sprintf("n.%03d", size-i)] = Int(int64(i))
		}
		s := SetOf(m)
		for name, v := range m {
			if got, ok := s.Get(name); !ok || got != v {
				t.Fatalf("size %d: Get(%q) = %v, %v; want %v", size, name, got, ok, v)
			}
		}
		if _, ok := s.Get("n.missing"); ok {
			t.Fatalf("size %d: Get of a missing name succeeded", size)
		}
		if !slices.IsSorted(s.Names().List()) {
			t.Fatalf("SetOf kept names out of order: %v", s.Names().List())
		}
	}
	var zero Set
	if _, ok := zero.Get("a"); ok || zero.Len() != 0 || len(zero.Map()) != 0 {
		t.Fatal("the zero Set is not empty")
	}
	for range zero.Sorted() {
		t.Fatal("the zero Set yielded an entry")
	}
}

// Sorted yields names in order whatever order the Set holds them in.
func TestSetSorted(t *testing.T) {
	names, err := NewNames([]string{"z", "b.x", "b", "a"})
	if err != nil {
		t.Fatal(err)
	}
	s := NewSet(names, []Value{Int(1), Int(2), Int(3), Int(4)})
	var got []string
	for name, v := range s.Sorted() {
		got = append(got, name+"="+v.String())
	}
	if want := "a=4 b=3 b.x=2 z=1"; strings.Join(got, " ") != want {
		t.Fatalf("Sorted yielded %s, want %s", strings.Join(got, " "), want)
	}
}

// A node's snapshot shares the previous one's Names while its names stay
// the same, and gets new ones, in order, when they change.
func TestSetLikeSharesNames(t *testing.T) {
	first := SetOf(Map{"b": Int(1), "a": Int(2)})
	second := SetLike(Map{"a": Int(3), "b": Int(4)}, first)
	if second.Names() != first.Names() {
		t.Fatal("same names, new Names")
	}
	if v, _ := second.Get("a"); v != Int(3) {
		t.Fatalf("a = %v, want 3", v)
	}
	for _, m := range []Map{{"a": Int(1), "c": Int(2)}, {"a": Int(1)}, {"a": Int(1), "b": Int(2), "c": Int(3)}} {
		third := SetLike(m, first)
		if third.Names() == first.Names() {
			t.Fatalf("%v shares the Names of %v", m, first)
		}
		if !third.Equal(SetOf(m)) || !slices.IsSorted(third.Names().List()) {
			t.Fatalf("SetLike(%v) = %v", m, third)
		}
	}
}

func TestSetEqual(t *testing.T) {
	ab, _ := NewNames([]string{"a", "b"})
	ba, _ := NewNames([]string{"b", "a"})
	x := NewSet(ab, []Value{Int(1), Null()})
	cases := []struct {
		y    Set
		want bool
	}{
		{NewSet(ba, []Value{Null(), Int(1)}), true},
		{NewSet(ab, []Value{Int(1), Null()}), true},
		{NewSet(ab, []Value{Int(1), Int(0)}), false},
		{NewSet(ba, []Value{Int(1), Null()}), false},
		{SetOf(Map{"a": Int(1)}), false},
		{Set{}, false},
	}
	for _, c := range cases {
		if got := x.Equal(c.y); got != c.want {
			t.Errorf("%v.Equal(%v) = %v, want %v", x, c.y, got, c.want)
		}
	}
}

func TestSnapshotJSON(t *testing.T) {
	in := Snapshot{Counters: SetOf(Map{"c": Int(1)}), Stats: SetOf(Map{"s": Float(0.5), "n": Null()})}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"counters":{"c":1},"stats":{"n":null,"s":0.5}}`; string(b) != want {
		t.Fatalf("marshalled %s, want %s", b, want)
	}
	var out Snapshot
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !out.Counters.Equal(in.Counters) || !out.Stats.Equal(in.Stats) {
		t.Fatalf("round trip: %v, want %v", out, in)
	}
}
