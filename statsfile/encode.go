package statsfile

import (
	"math"
	"strconv"
	"unicode/utf8"

	"capstats/stats"
)

// AppendJSON appends f as JSON, one node per line, in f's node order:
//
//	{
//	"<tubid>": {"timestamp": ..., "nickname": ..., "stats": {"counters": {...}, "stats": {...}}, "up": ..., "last_poll": ..., "last_error": ..., "poll_seconds": ...},
//	...
//	}
//
// Keys within "counters" and "stats" are sorted; ints stay ints, floats
// always carry a '.' or an exponent, null stays null (stats.Value.AppendJSON).
// Strings are escaped so that the output is valid JSON for any string
// (invalid UTF-8 is written as U+FFFD). Times that are not finite are
// written as 0. The output reads back with Decode to the same File.
func (f *File) AppendJSON(b []byte) []byte {
	if len(f.Nodes) == 0 {
		return append(b, "{}\n"...)
	}
	b = append(b, '{', '\n')
	for i := range f.Nodes {
		n := &f.Nodes[i]
		if i > 0 {
			b = append(b, ',', '\n')
		}
		b = appendString(b, n.TubID)
		b = append(b, `: {"timestamp": `...)
		b = appendTime(b, n.Timestamp)
		b = append(b, `, "nickname": `...)
		b = appendString(b, n.Nickname)
		b = append(b, `, "stats": {"counters": `...)
		b = appendSet(b, n.Stats.Counters)
		b = append(b, `, "stats": `...)
		b = appendSet(b, n.Stats.Stats)
		b = append(b, `}, "up": `...)
		b = strconv.AppendBool(b, n.Up)
		b = append(b, `, "last_poll": `...)
		b = appendTime(b, n.LastPoll)
		b = append(b, `, "last_error": `...)
		b = appendString(b, n.LastError)
		b = append(b, `, "poll_seconds": `...)
		b = appendTime(b, n.PollSeconds)
		b = append(b, '}')
	}
	return append(b, '\n', '}', '\n')
}

// appendSet writes set with its names in order. The order is worked out
// once per stats.Names, which the nodes reporting the same names share:
// sorting every node's names on every write was a third of the time of
// writing the file.
func appendSet(b []byte, set stats.Set) []byte {
	b = append(b, '{')
	names := set.Names()
	for j, i := range names.Order() {
		if j > 0 {
			b = append(b, ',', ' ')
		}
		b = appendString(b, names.At(int(i)))
		b = append(b, ':', ' ')
		b = set.Value(int(i)).AppendJSON(b)
	}
	return append(b, '}')
}

// appendTime writes seconds the way Python's json.dump writes time.time():
// plain decimal with a '.', exponent only for extreme magnitudes.
func appendTime(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, '0', '.', '0')
	}
	start := len(b)
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		return strconv.AppendFloat(b, f, 'e', -1, 64)
	}
	b = strconv.AppendFloat(b, f, 'f', -1, 64)
	for _, c := range b[start:] {
		if c == '.' {
			return b
		}
	}
	return append(b, '.', '0')
}

// noEscape[c] is true for ASCII bytes that go into a JSON string as they are.
var noEscape = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\' && c != 0x7f
	}
	return t
}()

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	i := 0
	for i < len(s) && noEscape[s[i]] {
		i++
	}
	if i == len(s) {
		b = append(b, s...)
		return append(b, '"')
	}
	b = append(b, s[:i]...)
	for i < len(s) {
		c := s[i]
		if noEscape[c] {
			b = append(b, c)
			i++
			continue
		}
		if c < utf8.RuneSelf {
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default: // other control characters and DEL
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			// As UTF-8, so that encoding what Decode read back gives
			// the same bytes.
			b = append(b, "\uFFFD"...)
		case r == '\u2028' || r == '\u2029':
			// Valid JSON, but not valid JavaScript in a string literal.
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
