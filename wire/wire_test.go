package wire

import (
	"math"
	"strings"
	"testing"

	"capnproto.org/go/capnp/v3"

	"capstats/capnp/statsrpc"
	"capstats/stats"
)

func encode(t testing.TB, s stats.Snapshot) []byte {
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		t.Fatal(err)
	}
	st, err := statsrpc.NewRootStats(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := FromSnapshot(s, st); err != nil {
		t.Fatal(err)
	}
	b, err := msg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decode(b []byte, lim Limits) (stats.Snapshot, error) {
	msg, err := capnp.Unmarshal(b)
	if err != nil {
		return stats.Snapshot{}, err
	}
	st, err := statsrpc.ReadRootStats(msg)
	if err != nil {
		return stats.Snapshot{}, err
	}
	return ToSnapshot(st, lim)
}

func TestRoundTripKeepsKinds(t *testing.T) {
	in := stats.Snapshot{
		Counters: stats.Map{"a.count": stats.Int(math.MaxInt64), "b.count": stats.Int(-3)},
		Stats: stats.Map{"f": stats.Float(0.1), "n": stats.Null(), "i": stats.Int(7),
			"whole.float": stats.Float(2), "ünïcode.name": stats.Float(1e-300)},
	}
	out, err := decode(encode(t, in), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []struct{ a, b stats.Map }{{in.Counters, out.Counters}, {in.Stats, out.Stats}} {
		if len(ns.a) != len(ns.b) {
			t.Fatalf("len %d != %d", len(ns.a), len(ns.b))
		}
		for k, v := range ns.a {
			if got := ns.b[k]; got != v || got.Kind() != v.Kind() {
				t.Errorf("%s: %v (%d) != %v (%d)", k, got, got.Kind(), v, v.Kind())
			}
		}
	}
}

func TestLimits(t *testing.T) {
	big := stats.Map{}
	for i := 0; i < 11; i++ {
		big[strings.Repeat("x", i+1)] = stats.Int(1)
	}
	cases := []struct {
		name string
		s    stats.Snapshot
		want string
	}{
		{"too many", stats.Snapshot{Stats: big}, "11 entries, limit is 10"},
		{"long name", stats.Snapshot{Stats: stats.Map{strings.Repeat("n", 33): stats.Int(1)}}, "limit is 32"},
		{"empty name", stats.Snapshot{Counters: stats.Map{"": stats.Int(1)}}, "empty name"},
		{"bad utf8", stats.Snapshot{Stats: stats.Map{"a\xff": stats.Int(1)}}, "UTF-8"},
		{"control", stats.Snapshot{Stats: stats.Map{"a\nb": stats.Int(1)}}, "control"},
		{"C1 control", stats.Snapshot{Stats: stats.Map{"a\u0085b": stats.Int(1)}}, "control"},
	}
	lim := Limits{MaxEntries: 10, MaxNameLen: 32}
	for _, c := range cases {
		_, err := decode(encode(t, c.s), lim)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}
}

func TestNaNAndInfBecomeNull(t *testing.T) {
	msg, seg, _ := capnp.NewMessage(capnp.SingleSegment(nil))
	st, _ := statsrpc.NewRootStats(seg)
	st.NewCounters(0)
	l, _ := st.NewStats(3)
	for i, f := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		l.At(i).SetName(string(rune('a' + i)))
		l.At(i).Value().SetFloat(f)
	}
	b, _ := msg.Marshal()
	out, err := decode(b, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range out.Stats {
		if !v.IsNull() {
			t.Errorf("%s = %v, want null", k, v)
		}
	}
}

func TestDuplicateNamesRefused(t *testing.T) {
	msg, seg, _ := capnp.NewMessage(capnp.SingleSegment(nil))
	st, _ := statsrpc.NewRootStats(seg)
	st.NewStats(0)
	l, _ := st.NewCounters(2)
	l.At(0).SetName("dup")
	l.At(1).SetName("dup")
	b, _ := msg.Marshal()
	if _, err := decode(b, DefaultLimits); err == nil || !strings.Contains(err.Error(), "duplicate") {
		t.Fatalf("err = %v", err)
	}
}

// FuzzToSnapshot feeds arbitrary bytes as a Stats message: no panic, and
// whatever is accepted obeys the limits.
func FuzzToSnapshot(f *testing.F) {
	f.Add(encode(f, stats.Snapshot{Counters: stats.Map{"c": stats.Int(1)}, Stats: stats.Map{"s": stats.Float(0.5), "n": stats.Null()}}))
	f.Add(encode(f, stats.Snapshot{}))
	f.Add([]byte{0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	lim := Limits{MaxEntries: 100, MaxNameLen: 64}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decode(b, lim)
		if err != nil {
			return
		}
		if n := len(s.Counters) + len(s.Stats); n > lim.MaxEntries {
			t.Fatalf("%d entries accepted", n)
		}
		for _, m := range []stats.Map{s.Counters, s.Stats} {
			for k, v := range m {
				if err := CheckName([]byte(k), lim.MaxNameLen); err != nil {
					t.Fatalf("accepted name %q: %v", k, err)
				}
				if v.Kind() == stats.KindFloat && (math.IsNaN(v.Float()) || math.IsInf(v.Float(), 0)) {
					t.Fatalf("accepted %v", v)
				}
			}
		}
	})
}

func BenchmarkToSnapshot50(b *testing.B) {
	s := stats.Snapshot{Counters: stats.Map{}, Stats: stats.Map{}}
	for i := 0; i < 25; i++ {
		s.Counters["storage_server.counter_"+string(rune('a'+i))] = stats.Int(int64(i))
		s.Stats["storage_server.stat_"+string(rune('a'+i))] = stats.Float(float64(i))
	}
	data := encode(b, s)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decode(data, DefaultLimits); err != nil {
			b.Fatal(err)
		}
	}
}
