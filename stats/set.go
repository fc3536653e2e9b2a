package stats

import (
	"encoding/json"
	"fmt"
	"iter"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Names is an immutable list of distinct stat names. The Sets decoded from
// nodes that report the same names share one Names, and with it the index
// and the name order worked out for it once: a gatherer keeps a slice of
// values per node and namespace instead of a map, which at 1,000 nodes was
// two fifths of the garbage of each poll round.
type Names struct {
	list []string

	indexOnce sync.Once
	index     map[string]int32

	orderOnce sync.Once
	order     []int32 // positions of list in name order
}

// NewNames returns the Names of list, in list's order. It fails on a name
// that appears twice.
func NewNames(list []string) (*Names, error) {
	n := &Names{list: list}
	n.indexOnce.Do(n.buildIndex)
	if len(n.index) != len(list) {
		// The index holds a repeated name's last position.
		for i, name := range list {
			if int(n.index[name]) != i {
				return nil, fmt.Errorf("duplicate name %q", name)
			}
		}
	}
	return n, nil
}

func (n *Names) buildIndex() {
	n.index = make(map[string]int32, len(n.list))
	for i, name := range n.list {
		n.index[name] = int32(i)
	}
}

// Len returns the number of names.
func (n *Names) Len() int {
	if n == nil {
		return 0
	}
	return len(n.list)
}

// List returns the names in order. The caller must not modify it.
func (n *Names) List() []string { return n.listOrNil() }

// At returns the i'th name.
func (n *Names) At(i int) string { return n.list[i] }

// Index returns the position of name, or -1.
func (n *Names) Index(name string) int {
	if n == nil {
		return -1
	}
	// A handful of names is quicker to scan than to hash.
	if len(n.list) <= 8 {
		for i, s := range n.list {
			if s == name {
				return i
			}
		}
		return -1
	}
	n.indexOnce.Do(n.buildIndex)
	if i, ok := n.index[name]; ok {
		return int(i)
	}
	return -1
}

// Order returns the positions of the names in name order. The caller must
// not modify it.
func (n *Names) Order() []int32 {
	if n == nil {
		return nil
	}
	n.orderOnce.Do(func() {
		order := make([]int32, len(n.list))
		for i := range order {
			order[i] = int32(i)
		}
		slices.SortFunc(order, func(a, b int32) int { return strings.Compare(n.list[a], n.list[b]) })
		n.order = order
	})
	return n.order
}

// Equal reports whether n and o hold the same names in the same order.
func (n *Names) Equal(o *Names) bool {
	return n == o || slices.Equal(n.listOrNil(), o.listOrNil())
}

func (n *Names) listOrNil() []string {
	if n == nil {
		return nil
	}
	return n.list
}

// Set is one namespace of a snapshot: distinct dotted stat names and their
// values. A Set is immutable; the zero Set is empty.
type Set struct {
	names  *Names
	values []Value
}

// NewSet pairs names with values, which must be as many. The Set keeps
// values: the caller must not change them afterwards.
func NewSet(names *Names, values []Value) Set {
	if names.Len() != len(values) {
		panic(fmt.Sprintf("stats: %d names for %d values", names.Len(), len(values)))
	}
	return Set{names: names, values: values}
}

// SetOf returns a Set of m's names, in name order, and their values.
func SetOf(m Map) Set {
	return SetLike(m, Set{})
}

// SetLike is SetOf, except that when m has exactly prev's names the result
// shares prev's Names: a node whose producers report the same names every
// poll then pays a lookup per name instead of a sort, and sends its names
// in the same order every time, which the gatherer recognises at once.
func SetLike(m Map, prev Set) Set {
	if len(m) == 0 {
		return Set{}
	}
	values := make([]Value, len(m))
	if prev.Len() == len(m) {
		same := true
		for i, name := range prev.names.list {
			v, ok := m[name]
			if !ok {
				same = false
				break
			}
			values[i] = v
		}
		if same {
			return Set{names: prev.names, values: values}
		}
	}
	list := make([]string, 0, len(m))
	for name := range m {
		list = append(list, name)
	}
	slices.Sort(list)
	for i, name := range list {
		values[i] = m[name]
	}
	return Set{names: &Names{list: list}, values: values}
}

// Len returns the number of entries.
func (s Set) Len() int { return len(s.values) }

// Names returns s's names; nil if s is empty.
func (s Set) Names() *Names { return s.names }

// Value returns the value of the i'th name of s.Names().
func (s Set) Value(i int) Value { return s.values[i] }

// Get returns the value of name and whether s has it.
func (s Set) Get(name string) (Value, bool) {
	if i := s.names.Index(name); i >= 0 {
		return s.values[i], true
	}
	return Value{}, false
}

// All yields every entry, in no particular order.
func (s Set) All() iter.Seq2[string, Value] {
	return func(yield func(string, Value) bool) {
		for i, v := range s.values {
			if !yield(s.names.list[i], v) {
				return
			}
		}
	}
}

// Sorted yields every entry in name order.
func (s Set) Sorted() iter.Seq2[string, Value] {
	return func(yield func(string, Value) bool) {
		for _, i := range s.names.Order() {
			if !yield(s.names.list[i], s.values[i]) {
				return
			}
		}
	}
}

// Map returns the entries of s as a new Map.
func (s Set) Map() Map {
	m := make(Map, s.Len())
	for name, v := range s.All() {
		m[name] = v
	}
	return m
}

// Equal reports whether s and o hold the same names with the same values,
// in whatever order.
func (s Set) Equal(o Set) bool {
	if s.Len() != o.Len() {
		return false
	}
	if s.names.Equal(o.names) {
		return slices.Equal(s.values, o.values)
	}
	for name, v := range s.All() {
		if w, ok := o.Get(name); !ok || w != v {
			return false
		}
	}
	return true
}

// String formats s as {name: value, ...}, names in order, for messages.
func (s Set) String() string {
	var b strings.Builder
	b.WriteByte('{')
	for name, v := range s.Sorted() {
		if b.Len() > 1 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(name))
		b.WriteString(": ")
		b.Write(v.AppendJSON(nil))
	}
	b.WriteByte('}')
	return b.String()
}

// MarshalJSON implements json.Marshaler: an object, names in order.
func (s Set) MarshalJSON() ([]byte, error) { return json.Marshal(s.Map()) }

// UnmarshalJSON implements json.Unmarshaler.
func (s *Set) UnmarshalJSON(b []byte) error {
	var m Map
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*s = SetOf(m)
	return nil
}
