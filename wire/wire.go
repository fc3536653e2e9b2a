// Package wire converts between the Cap'n Proto Stats struct and
// stats.Snapshot. It is the one place where that conversion happens, and
// where the gatherer checks what a node sends before believing it.
package wire

import (
	"fmt"
	"unicode/utf8"

	"capstats/capnp/statsrpc"
	"capstats/stats"
)

// Limits bound what a reply may hold. A reply that breaks one is refused
// whole.
type Limits struct {
	// MaxEntries bounds counters plus stats in one reply.
	MaxEntries int
	// MaxNameLen bounds a name in bytes.
	MaxNameLen int
}

// DefaultLimits are the gatherer's limits.
var DefaultLimits = Limits{MaxEntries: 10000, MaxNameLen: 256}

// FromSnapshot fills dst, a freshly allocated Stats struct, with s.
func FromSnapshot(s stats.Snapshot, dst statsrpc.Stats) error {
	if err := fill(s.Counters, dst.NewCounters); err != nil {
		return fmt.Errorf("counters: %w", err)
	}
	if err := fill(s.Stats, dst.NewStats); err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	return nil
}

func fill(m stats.Map, newList func(int32) (statsrpc.Entry_List, error)) error {
	list, err := newList(int32(len(m)))
	if err != nil {
		return err
	}
	i := 0
	for name, v := range m {
		e := list.At(i)
		i++
		if err := e.SetName(name); err != nil {
			return err
		}
		switch v.Kind() {
		case stats.KindInt:
			e.Value().SetInt(v.Int())
		case stats.KindFloat:
			e.Value().SetFloat(v.Float())
		default:
			e.Value().SetNull()
		}
	}
	return nil
}

// ToSnapshot reads src into a snapshot, checking it against lim: names
// non-empty, not too long, valid UTF-8 without control characters, not
// repeated within a namespace; not too many entries. NaN and ±Inf become
// null.
func ToSnapshot(src statsrpc.Stats, lim Limits) (stats.Snapshot, error) {
	counters, err := src.Counters()
	if err != nil {
		return stats.Snapshot{}, fmt.Errorf("counters: %w", err)
	}
	sts, err := src.Stats()
	if err != nil {
		return stats.Snapshot{}, fmt.Errorf("stats: %w", err)
	}
	if n := counters.Len() + sts.Len(); lim.MaxEntries > 0 && n > lim.MaxEntries {
		return stats.Snapshot{}, fmt.Errorf("reply has %d entries, limit is %d", n, lim.MaxEntries)
	}
	var snap stats.Snapshot
	if snap.Counters, err = read(counters, lim); err != nil {
		return stats.Snapshot{}, fmt.Errorf("counters: %w", err)
	}
	if snap.Stats, err = read(sts, lim); err != nil {
		return stats.Snapshot{}, fmt.Errorf("stats: %w", err)
	}
	return snap, nil
}

func read(list statsrpc.Entry_List, lim Limits) (stats.Map, error) {
	m := make(stats.Map, list.Len())
	for i := 0; i < list.Len(); i++ {
		e := list.At(i)
		nb, err := e.NameBytes()
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		if err := CheckName(nb, lim.MaxNameLen); err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		name := string(nb)
		if _, dup := m[name]; dup {
			return nil, fmt.Errorf("entry %d: duplicate name %q", i, name)
		}
		var v stats.Value
		switch val := e.Value(); val.Which() {
		case statsrpc.Entry_value_Which_int:
			v = stats.Int(val.Int())
		case statsrpc.Entry_value_Which_float:
			v = stats.Float(val.Float())
		case statsrpc.Entry_value_Which_null:
			v = stats.Null()
		default:
			return nil, fmt.Errorf("entry %q: unknown value kind %d", name, val.Which())
		}
		m[name] = v
	}
	return m, nil
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
