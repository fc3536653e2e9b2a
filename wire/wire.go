// Package wire converts between the Cap'n Proto Stats struct and
// stats.Snapshot. It is the one place where that conversion happens, and
// where the gatherer checks what a node sends before believing it.
package wire

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"capstats/capnp/statsrpc"
	"capstats/stats"
)

// Limits bound what a reply may hold. A reply that breaks one is refused
// whole. A field left zero takes its value from DefaultLimits, so that
// forgetting one never leaves a reply unbounded; a negative one means no
// bound.
type Limits struct {
	// MaxEntries bounds counters plus stats in one reply.
	MaxEntries int
	// MaxNameLen bounds a name in bytes.
	MaxNameLen int
}

// DefaultLimits are the gatherer's limits. A Tahoe node sends a few
// hundred entries; 2,000 leaves room and keeps what a hostile node can make
// the gatherer hold, and /metrics carry, small.
var DefaultLimits = Limits{MaxEntries: 2000, MaxNameLen: 256}

// MaxMessageSize is the largest Cap'n Proto message a reply within l
// needs: every name at its longest with its NUL, a value struct per
// entry, and room for the framing and the RPC envelope; at least 1 MiB.
// A gatherer refuses larger messages, so that the bytes in flight per
// node follow from the limits and not from the transport's default.
func (l Limits) MaxMessageSize() uint64 {
	n := uint64(max(l.MaxEntries, 0))*(uint64(max(l.MaxNameLen, 0))+1+16) + 64<<10
	return max(n, 1<<20)
}

// withDefaults fills the zero fields of l from DefaultLimits.
func (l Limits) withDefaults() Limits {
	if l.MaxEntries == 0 {
		l.MaxEntries = DefaultLimits.MaxEntries
	}
	if l.MaxNameLen == 0 {
		l.MaxNameLen = DefaultLimits.MaxNameLen
	}
	return l
}

// FromSnapshot fills dst, a freshly allocated Stats struct, with s. A name
// holding a NUL byte is refused: NUL ends each name on the wire.
func FromSnapshot(s stats.Snapshot, dst statsrpc.Stats) error {
	if err := fill(s.Counters, dst.NewCounters); err != nil {
		return fmt.Errorf("counters: %w", err)
	}
	if err := fill(s.Stats, dst.NewStats); err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	return nil
}

// nameBufs are the scratch buffers the names of a reply are joined in
// before they are copied into the message.
var nameBufs = sync.Pool{New: func() any { return new([]byte) }}

func fill(set stats.Set, newEntries func() (statsrpc.Entries, error)) error {
	e, err := newEntries()
	if err != nil {
		return err
	}
	values, err := e.NewValues(int32(set.Len()))
	if err != nil {
		return err
	}
	buf := nameBufs.Get().(*[]byte)
	defer nameBufs.Put(buf)
	names := (*buf)[:0]
	i := 0
	for name, v := range set.All() {
		if strings.IndexByte(name, 0) >= 0 {
			return fmt.Errorf("name %q has a NUL byte", name)
		}
		names = append(append(names, name...), 0)
		val := values.At(i)
		i++
		switch v.Kind() {
		case stats.KindInt:
			val.SetInt(v.Int())
		case stats.KindFloat:
			val.SetFloat(v.Float())
		default:
			val.SetNull()
		}
	}
	*buf = names
	return e.SetNames(names)
}

// Decoder reads replies into snapshots. Nodes of one grid send the same
// few names, so a Decoder keeps what it has read (the names of each blob
// it has seen, and one copy of each name) and a reply like an earlier one
// costs a lookup. What it keeps is its own: a gatherer has one, so what
// one gatherer's nodes send never costs another, and the caches are
// bounded, so a node making up names costs only a fresh start of them.
//
// The zero Decoder is ready to use, and it is safe for concurrent use. It
// must not be copied after first use.
type Decoder struct {
	nameSets nameSets
	interned interned

	hits, misses atomic.Int64
}

// CacheStats are what a Decoder's caches hold and how often they served.
type CacheStats struct {
	// Hits and Misses count the namespaces of replies (empty ones aside)
	// whose blob of names the decoder had read before, and those it had
	// not.
	Hits, Misses int64
	// NameSets is how many blobs of names it holds (at most 256), and
	// Interned how many distinct names (at most 4,096).
	NameSets, Interned int
}

// HitRate is Hits over Hits+Misses, or 0 before any reply.
func (c CacheStats) HitRate() float64 {
	if c.Hits+c.Misses == 0 {
		return 0
	}
	return float64(c.Hits) / float64(c.Hits+c.Misses)
}

// CacheStats returns a snapshot of the decoder's cache figures.
func (d *Decoder) CacheStats() CacheStats {
	c := CacheStats{Hits: d.hits.Load(), Misses: d.misses.Load()}
	if m := d.nameSets.read.Load(); m != nil {
		c.NameSets = len(*m)
	}
	d.interned.mu.Lock()
	c.Interned = len(d.interned.all)
	d.interned.mu.Unlock()
	return c
}

// ToSnapshot reads src into a snapshot, checking it against lim (its zero
// fields taken from DefaultLimits): as many
// names as values, names non-empty, not too long, valid UTF-8 without
// control characters, not repeated within a namespace; not too many
// entries. NaN and ±Inf become null.
func (d *Decoder) ToSnapshot(src statsrpc.Stats, lim Limits) (stats.Snapshot, error) {
	lim = lim.withDefaults()
	counters, err := src.Counters()
	if err != nil {
		return stats.Snapshot{}, fmt.Errorf("counters: %w", err)
	}
	sts, err := src.Stats()
	if err != nil {
		return stats.Snapshot{}, fmt.Errorf("stats: %w", err)
	}
	// A namespace that is there but not a struct is the list of entries
	// of the wire format before this one; read as a struct it would look
	// empty, and the node would seem to report nothing.
	if (src.HasCounters() && !counters.IsValid()) || (src.HasStats() && !sts.IsValid()) {
		return stats.Snapshot{}, errOldFormat
	}
	cv, err := counters.Values()
	if err != nil {
		return stats.Snapshot{}, fmt.Errorf("counters: %w", err)
	}
	sv, err := sts.Values()
	if err != nil {
		return stats.Snapshot{}, fmt.Errorf("stats: %w", err)
	}
	if n := cv.Len() + sv.Len(); lim.MaxEntries > 0 && n > lim.MaxEntries {
		return stats.Snapshot{}, fmt.Errorf("reply has %d entries, limit is %d", n, lim.MaxEntries)
	}
	var snap stats.Snapshot
	if snap.Counters, err = d.read(counters, cv, lim); err != nil {
		return stats.Snapshot{}, fmt.Errorf("counters: %w", err)
	}
	if snap.Stats, err = d.read(sts, sv, lim); err != nil {
		return stats.Snapshot{}, fmt.Errorf("stats: %w", err)
	}
	return snap, nil
}

// errOldFormat is what a gatherer says of a node that still sends a Text
// per entry (capstats before the names travelled as one blob).
var errOldFormat = errors.New("reply is in an older wire format (a list of entries per namespace): upgrade the node")

func (d *Decoder) read(e statsrpc.Entries, values statsrpc.Value_List, lim Limits) (stats.Set, error) {
	blob, err := e.Names()
	if err != nil {
		return stats.Set{}, fmt.Errorf("names: %w", err)
	}
	n := values.Len()
	names, err := d.namesOf(blob, n, lim)
	if err != nil || n == 0 {
		return stats.Set{}, err
	}
	vals := make([]stats.Value, n)
	for i := range vals {
		switch val := values.At(i); val.Which() {
		case statsrpc.Value_Which_int:
			vals[i] = stats.Int(val.Int())
		case statsrpc.Value_Which_float:
			vals[i] = stats.Float(val.Float())
		case statsrpc.Value_Which_null:
		default:
			return stats.Set{}, fmt.Errorf("entry %q: unknown value kind %d", names.At(i), val.Which())
		}
	}
	return stats.NewSet(names, vals), nil
}

// namesOf returns the n names of blob, each ended by a NUL, checked against
// lim. Nodes of one grid send the same few blobs, so the Names of each
// blob seen is kept (up to maxNameSets of them) and a blob seen before costs
// one lookup.
func (d *Decoder) namesOf(blob []byte, n int, lim Limits) (*stats.Names, error) {
	if n == 0 { // nothing to read or to remember
		if len(blob) > 0 {
			return nil, fmt.Errorf("more names than the %d values", n)
		}
		return nil, nil
	}
	if c, ok := d.nameSets.lookup(blob); ok && c.names.Len() == n {
		d.hits.Add(1)
		if lim.MaxNameLen > 0 && c.longest > lim.MaxNameLen {
			return nil, fmt.Errorf("entry %d: name of %d bytes, limit is %d", c.longestAt, c.longest, lim.MaxNameLen)
		}
		return c.names, nil
	}
	d.misses.Add(1)
	whole := blob
	list := make([]string, n)
	longest, longestAt := 0, 0
	for i := range list {
		end := bytes.IndexByte(blob, 0)
		if end < 0 {
			return nil, fmt.Errorf("%d names for %d values", i, n)
		}
		nb := blob[:end]
		blob = blob[end+1:]
		// A name seen before has passed CheckName already; only its length
		// is checked again, as lim may differ from the one it passed.
		name, known := d.interned.lookup(nb)
		if !known {
			if err := CheckName(nb, lim.MaxNameLen); err != nil {
				return nil, fmt.Errorf("entry %d: %w", i, err)
			}
			name = d.interned.add(nb)
		} else if lim.MaxNameLen > 0 && len(nb) > lim.MaxNameLen {
			return nil, fmt.Errorf("entry %d: name of %d bytes, limit is %d", i, len(nb), lim.MaxNameLen)
		}
		if len(nb) > longest {
			longest, longestAt = len(nb), i
		}
		list[i] = name
	}
	if len(blob) > 0 {
		return nil, fmt.Errorf("more names than the %d values", n)
	}
	names, err := stats.NewNames(list)
	if err != nil {
		return nil, err
	}
	d.nameSets.add(whole, nameSet{names: names, longest: longest, longestAt: longestAt})
	return names, nil
}

// nameSet is a blob of names already read, and the length of its longest
// name, which a gatherer with a lower limit refuses.
type nameSet struct {
	names              *stats.Names
	longest, longestAt int
}

// nameSets maps blobs of names to what they read as, published like
// interned (below): lookups read an immutable map without locking.
type nameSets struct {
	read atomic.Pointer[map[string]nameSet]
	mu   sync.Mutex
}

// maxNameSets bounds the blobs kept. Adding one past it starts the map
// afresh: the blobs a grid sends come back at the next poll, while a node
// making up names cannot make the others pay for reading theirs for ever.
const maxNameSets = 256

func (ns *nameSets) lookup(blob []byte) (nameSet, bool) {
	if m := ns.read.Load(); m != nil {
		c, ok := (*m)[string(blob)]
		return c, ok
	}
	return nameSet{}, false
}

// add publishes a copy of the map with blob added. Copying costs
// O(maxNameSets) per new blob, which a grid sends once per set of names.
func (ns *nameSets) add(blob []byte, c nameSet) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	var old map[string]nameSet
	if p := ns.read.Load(); p != nil {
		old = *p
	}
	if _, ok := old[string(blob)]; ok {
		return
	}
	if len(old) >= maxNameSets {
		old = nil
	}
	m := make(map[string]nameSet, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[string(blob)] = c
	ns.read.Store(&m)
}

// interned holds one copy of each name seen, up to maxInterned of them.
// Every node reports the same few dozen names, so the gatherer keeps one
// string per name rather than one per node, and decoding a reply allocates
// no strings. Only names that passed CheckName are kept, so a name found
// here needs no second check. The bound caps what a node sending made-up
// names can cost; past it, names are simply allocated.
//
// Lookups read an immutable map without locking (pollers on every core
// decode at once; a read lock's shared counter was a contended cache line).
// New names go into all under mu, and a copy of all is published once as
// many lookups have missed as it holds names, so that publishing costs
// O(1) per miss.
type interned struct {
	read   atomic.Pointer[map[string]string] // immutable once published
	mu     sync.Mutex
	all    map[string]string // every interned name; guarded by mu
	misses int               // lookups that went to all since the last publish
	stale  bool              // all holds names read does not
}

const maxInterned = 4096

// lookup returns the interned copy of b, if there is one.
func (in *interned) lookup(b []byte) (string, bool) {
	if m := in.read.Load(); m != nil {
		s, ok := (*m)[string(b)]
		return s, ok
	}
	return "", false
}

// add returns the interned copy of b, adding it if there is room. b must
// have passed CheckName.
func (in *interned) add(b []byte) string {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.all == nil {
		in.all = make(map[string]string)
	}
	s, ok := in.all[string(b)]
	if !ok {
		s = string(b)
		if len(in.all) < maxInterned {
			in.all[s] = s
			in.stale = true
		}
	}
	in.misses++
	if in.stale && in.misses >= len(in.all) {
		m := make(map[string]string, len(in.all))
		for k, v := range in.all {
			m[k] = v
		}
		in.read.Store(&m)
		in.misses, in.stale = 0, false
	}
	return s
}

// CheckName enforces the rules for a stat name: non-empty, at most maxLen
// bytes (when maxLen > 0), valid UTF-8, no control characters.
func CheckName(b []byte, maxLen int) error {
	if len(b) == 0 {
		return fmt.Errorf("empty name")
	}
	if maxLen > 0 && len(b) > maxLen {
		return fmt.Errorf("name of %d bytes, limit is %d", len(b), maxLen)
	}
	for i := 0; i < len(b); {
		if c := b[i]; c < utf8.RuneSelf { // ASCII, most names
			if c < 0x20 || c == 0x7f {
				return fmt.Errorf("name has a control character")
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			return fmt.Errorf("name is not valid UTF-8")
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("name has a control character")
		}
		i += size
	}
	return nil
}
