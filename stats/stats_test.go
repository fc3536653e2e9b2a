package stats

import (
	"encoding/json"
	"math"
	"testing"
	"unsafe"
)

func TestAppendJSONKeepsKinds(t *testing.T) {
	cases := []struct {
		v    Value
		want string
	}{
		{Int(0), "0"}, {Int(-42), "-42"}, {Int(math.MaxInt64), "9223372036854775807"},
		{Float(2), "2.0"}, {Float(0.5), "0.5"}, {Float(1e-7), "1e-07"}, {Float(1e21), "1e+21"},
		{Null(), "null"}, {Float(math.NaN()), "null"}, {Float(math.Inf(-1)), "null"},
	}
	for _, c := range cases {
		if got := string(c.v.AppendJSON(nil)); got != c.want {
			t.Errorf("%#v: %s, want %s", c.v, got, c.want)
		}
		var back Value
		if err := json.Unmarshal([]byte(c.want), &back); err != nil {
			t.Fatal(err)
		}
		if back.Kind() != c.v.Kind() || (back.Kind() != KindNull && back.Float() != c.v.Float()) {
			t.Errorf("%s read back as %#v, want %#v", c.want, back, c.v)
		}
	}
}

func TestAppendDecimalHasNoExponent(t *testing.T) {
	cases := map[Value]string{Float(1e-5): "0.00001", Float(5.5e21): "5500000000000000000000", Int(7): "7", Null(): "U", Float(0.25): "0.25"}
	for v, want := range cases {
		if got := string(v.AppendDecimal(nil)); got != want {
			t.Errorf("%v: %s, want %s", v, got, want)
		}
	}
}

func TestParseNumber(t *testing.T) {
	cases := []struct {
		in   string
		kind Kind
	}{{"12", KindInt}, {"-3", KindInt}, {"1.0", KindFloat}, {"1e3", KindFloat}, {"1E3", KindFloat},
		{"99999999999999999999", KindFloat}}
	for _, c := range cases {
		v, err := ParseNumber(c.in)
		if err != nil || v.Kind() != c.kind {
			t.Errorf("ParseNumber(%q) = %#v, %v; want kind %d", c.in, v, err, c.kind)
		}
	}
	for _, bad := range []string{"", "x", "1.2.3", "--1"} {
		if _, err := ParseNumber(bad); err == nil {
			t.Errorf("ParseNumber(%q) succeeded", bad)
		}
	}
}

func TestZeroValueIsNull(t *testing.T) {
	var v Value
	if !v.IsNull() || !math.IsNaN(v.Float()) || v.Int() != 0 {
		t.Fatalf("zero Value %#v is not null", v)
	}
}

// The gatherer holds a Value per stat per node; the size is part of its
// memory per node (BENCHMARKS.md).
func TestValueIsTwoWords(t *testing.T) {
	if n := unsafe.Sizeof(Value{}); n != 16 {
		t.Fatalf("Value is %d bytes, want 16", n)
	}
	for _, v := range []Value{Int(-1 << 63), Int(1<<63 - 1), Float(-0.5), Float(math.MaxFloat64), Float(math.SmallestNonzeroFloat64)} {
		switch v.Kind() {
		case KindInt:
			if Int(v.Int()) != v {
				t.Errorf("%v does not round-trip through Int", v)
			}
		case KindFloat:
			if Float(v.Float()) != v {
				t.Errorf("%v does not round-trip through Float", v)
			}
		}
	}
}
