// Package stats is the data model shared by every part of capstats: a
// node's snapshot of counters and stats, whose values are an int, a float or
// null. It imports nothing beyond the standard library so that the munin
// plugin, which reads these values from a file, starts fast.
package stats

import (
	"math"
	"strconv"
)

// Kind says which of the three shapes a Value has.
type Kind uint8

const (
	// KindNull is a stat with no defined value, such as a percentile taken
	// over too few samples. It is the zero Kind so that the zero Value is null.
	KindNull Kind = iota
	KindInt
	KindFloat
)

// Value is one stat or counter value. Ints stay ints and null stays null all
// the way from a producer to stats.json, as they did in the original.
//
// A Value is 16 bytes, the int or the float's bits in one word: the
// gatherer keeps one per stat per node, and a snapshot map's slots are a
// third smaller than with a word for each.
type Value struct {
	kind Kind
	bits uint64
}

// Null returns the null Value.
func Null() Value { return Value{} }

// Int returns an integer Value.
func Int(i int64) Value { return Value{kind: KindInt, bits: uint64(i)} }

// Float returns a floating-point Value. NaN and ±Inf have no place in JSON
// or in munin, so they become null.
func Float(f float64) Value {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return Null()
	}
	return Value{kind: KindFloat, bits: math.Float64bits(f)}
}

// Kind reports the shape of v.
func (v Value) Kind() Kind { return v.kind }

// IsNull reports whether v is null.
func (v Value) IsNull() bool { return v.kind == KindNull }

// Int returns v as an int64; a float is truncated and null is 0.
func (v Value) Int() int64 {
	if v.kind == KindFloat {
		return int64(v.f())
	}
	return int64(v.bits)
}

// Float returns v as a float64; null is NaN.
func (v Value) Float() float64 {
	switch v.kind {
	case KindInt:
		return float64(int64(v.bits))
	case KindFloat:
		return v.f()
	}
	return math.NaN()
}

func (v Value) f() float64 { return math.Float64frombits(v.bits) }

// AppendJSON appends v as JSON: null, an integer, or a float that always
// carries a '.' or an exponent so that it reads back as a float.
func (v Value) AppendJSON(b []byte) []byte {
	switch v.kind {
	case KindInt:
		return strconv.AppendInt(b, int64(v.bits), 10)
	case KindFloat:
		start := len(b)
		b = strconv.AppendFloat(b, v.f(), 'g', -1, 64)
		for _, c := range b[start:] {
			if c == '.' || c == 'e' {
				return b
			}
		}
		return append(b, '.', '0')
	}
	return append(b, "null"...)
}

// AppendDecimal appends v the way munin reads numbers: plain decimal, never
// an exponent. Null is munin's "unknown", U.
func (v Value) AppendDecimal(b []byte) []byte {
	switch v.kind {
	case KindInt:
		return strconv.AppendInt(b, int64(v.bits), 10)
	case KindFloat:
		return strconv.AppendFloat(b, v.f(), 'f', -1, 64)
	}
	return append(b, 'U')
}

// String formats v as JSON does.
func (v Value) String() string { return string(v.AppendJSON(nil)) }

// MarshalJSON implements json.Marshaler.
func (v Value) MarshalJSON() ([]byte, error) { return v.AppendJSON(nil), nil }

// UnmarshalJSON implements json.Unmarshaler: a number without '.', 'e' or
// 'E' is an int (if it fits), any other number a float.
func (v *Value) UnmarshalJSON(b []byte) error {
	s := string(b)
	if s == "null" {
		*v = Null()
		return nil
	}
	p, err := ParseNumber(s)
	if err != nil {
		return err
	}
	*v = p
	return nil
}

// ParseNumber parses a JSON number into an int Value when it is written as
// an integer and fits in an int64, and a float Value otherwise.
func ParseNumber(s string) (Value, error) {
	isInt := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '.' || c == 'e' || c == 'E' {
			isInt = false
			break
		}
	}
	if isInt {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return Int(i), nil
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return Value{}, &strconv.NumError{Func: "ParseNumber", Num: s, Err: strconv.ErrSyntax}
	}
	return Float(f), nil
}

// Map is one namespace of a snapshot: dotted stat names to values.
type Map map[string]Value

// Snapshot is what a node reports on each poll, exactly as the gatherer
// stores it: {"counters": {...}, "stats": {...}}.
type Snapshot struct {
	Counters Set `json:"counters"`
	Stats    Set `json:"stats"`
}
