package wire

import (
	"fmt"
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

// decode reads b with a fresh Decoder: nothing learnt from other replies.
func decode(b []byte, lim Limits) (stats.Snapshot, error) {
	return decodeWith(new(Decoder), b, lim)
}

func decodeWith(d *Decoder, b []byte, lim Limits) (stats.Snapshot, error) {
	msg, err := capnp.Unmarshal(b)
	if err != nil {
		return stats.Snapshot{}, err
	}
	st, err := statsrpc.ReadRootStats(msg)
	if err != nil {
		return stats.Snapshot{}, err
	}
	return d.ToSnapshot(st, lim)
}

func TestRoundTripKeepsKinds(t *testing.T) {
	in := stats.Snapshot{
		Counters: stats.SetOf(stats.Map{"a.count": stats.Int(math.MaxInt64), "b.count": stats.Int(-3)}),
		Stats: stats.SetOf(stats.Map{"f": stats.Float(0.1), "n": stats.Null(), "i": stats.Int(7),
			"whole.float": stats.Float(2), "ünïcode.name": stats.Float(1e-300)}),
	}
	out, err := decode(encode(t, in), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []struct{ a, b stats.Map }{{in.Counters.Map(), out.Counters.Map()}, {in.Stats.Map(), out.Stats.Map()}} {
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
		{"too many", stats.Snapshot{Stats: stats.SetOf(big)}, "11 entries, limit is 10"},
		{"long name", stats.Snapshot{Stats: stats.SetOf(stats.Map{strings.Repeat("n", 33): stats.Int(1)})}, "limit is 32"},
		{"empty name", stats.Snapshot{Counters: stats.SetOf(stats.Map{"": stats.Int(1)})}, "empty name"},
		{"bad utf8", stats.Snapshot{Stats: stats.SetOf(stats.Map{"a\xff": stats.Int(1)})}, "UTF-8"},
		{"control", stats.Snapshot{Stats: stats.SetOf(stats.Map{"a\nb": stats.Int(1)})}, "control"},
		{"C1 control", stats.Snapshot{Stats: stats.SetOf(stats.Map{"a\u0085b": stats.Int(1)})}, "control"},
	}
	lim := Limits{MaxEntries: 10, MaxNameLen: 32}
	for _, c := range cases {
		_, err := decode(encode(t, c.s), lim)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}
}

// rawStats is a Stats message whose stats hold names (the blob, unchecked)
// and n values set by set; no counters.
func rawStats(t testing.TB, names []byte, n int, set func(i int, v statsrpc.Value)) []byte {
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		t.Fatal(err)
	}
	st, err := statsrpc.NewRootStats(seg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.NewCounters(); err != nil {
		t.Fatal(err)
	}
	e, err := st.NewStats()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.SetNames(names); err != nil {
		t.Fatal(err)
	}
	l, err := e.NewValues(int32(n))
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		set(i, l.At(i))
	}
	b, err := msg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNaNAndInfBecomeNull(t *testing.T) {
	fs := []float64{math.NaN(), math.Inf(1), math.Inf(-1)}
	b := rawStats(t, []byte("a\x00b\x00c\x00"), 3, func(i int, v statsrpc.Value) { v.SetFloat(fs[i]) })
	out, err := decode(b, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if out.Stats.Len() != 3 {
		t.Fatalf("got %v, want 3 stats", out.Stats)
	}
	for k, v := range out.Stats.All() {
		if !v.IsNull() {
			t.Errorf("%s = %v, want null", k, v)
		}
	}
}

// The names blob and the values must agree: each value has its name, each
// name its value, every name ends with NUL, and no name repeats.
func TestNamesAndValuesMustMatch(t *testing.T) {
	one := func(int, statsrpc.Value) {}
	cases := []struct {
		name  string
		names string
		n     int
		want  string
	}{
		{"duplicate", "dup\x00dup\x00", 2, "duplicate"},
		{"more names", "a\x00b\x00", 1, "more names than the 1 values"},
		{"fewer names", "a\x00", 2, "1 names for 2 values"},
		{"unterminated", "a", 1, "0 names for 1 values"},
		{"names without values", "a\x00", 0, "more names than the 0 values"},
		{"empty name", "\x00", 1, "empty name"},
	}
	for _, c := range cases {
		_, err := decode(rawStats(t, []byte(c.names), c.n, one), DefaultLimits)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}
}

// A node with the previous wire format sends a list of entries where a
// namespace struct is now: refused with a reason, not read as empty.
func TestOlderWireFormatRefused(t *testing.T) {
	msg, seg, _ := capnp.NewMessage(capnp.SingleSegment(nil))
	st, _ := statsrpc.NewRootStats(seg)
	old, err := capnp.NewCompositeList(seg, capnp.ObjectSize{DataSize: 16, PointerCount: 1}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := capnp.Struct(st).SetPtr(1, old.ToPtr()); err != nil {
		t.Fatal(err)
	}
	b, _ := msg.Marshal()
	if _, err := decode(b, DefaultLimits); err == nil || !strings.Contains(err.Error(), "older wire format") {
		t.Fatalf("err = %v, want an older wire format error", err)
	}
}

func TestNameWithNULRefusedOnEncode(t *testing.T) {
	_, seg, _ := capnp.NewMessage(capnp.SingleSegment(nil))
	st, _ := statsrpc.NewRootStats(seg)
	err := FromSnapshot(stats.Snapshot{Stats: stats.SetOf(stats.Map{"a\x00b": stats.Int(1)})}, st)
	if err == nil || !strings.Contains(err.Error(), "NUL") || !strings.HasPrefix(err.Error(), "stats: ") {
		t.Fatalf("err = %v, want a NUL byte error in stats", err)
	}
}

// FuzzToSnapshot feeds arbitrary bytes as a Stats message: no panic, and
// whatever is accepted obeys the limits.
func FuzzToSnapshot(f *testing.F) {
	f.Add(encode(f, stats.Snapshot{Counters: stats.SetOf(stats.Map{"c": stats.Int(1)}), Stats: stats.SetOf(stats.Map{"s": stats.Float(0.5), "n": stats.Null()})}))
	f.Add(encode(f, stats.Snapshot{}))
	f.Add([]byte{0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	lim := Limits{MaxEntries: 100, MaxNameLen: 64}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decode(b, lim)
		if err != nil {
			return
		}
		if n := s.Counters.Len() + s.Stats.Len(); n > lim.MaxEntries {
			t.Fatalf("%d entries accepted", n)
		}
		for _, m := range []stats.Set{s.Counters, s.Stats} {
			for k, v := range m.All() {
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
	counters, sts := stats.Map{}, stats.Map{}
	for i := 0; i < 25; i++ {
		counters["storage_server.counter_"+string(rune('a'+i))] = stats.Int(int64(i))
		sts["storage_server.stat_"+string(rune('a'+i))] = stats.Float(float64(i))
	}
	s := stats.Snapshot{Counters: stats.SetOf(counters), Stats: stats.SetOf(sts)}
	data := encode(b, s)
	var d Decoder // one per gatherer, as it polls
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeWith(&d, data, DefaultLimits); err != nil {
			b.Fatal(err)
		}
	}
}

// Replies with the same names share one stats.Names; a gatherer whose limit
// is lower than a shared name's length still refuses it.
func TestRepliesShareNames(t *testing.T) {
	snap := stats.Snapshot{
		Counters: stats.SetOf(stats.Map{"share.c1": stats.Int(1), "share.c2": stats.Int(2)}),
		Stats:    stats.SetOf(stats.Map{"share.a_rather_long_name": stats.Float(0.5)}),
	}
	var d Decoder
	first, err := decodeWith(&d, encode(t, snap), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	snap.Counters = stats.SetOf(stats.Map{"share.c1": stats.Int(10), "share.c2": stats.Int(20)})
	second, err := decodeWith(&d, encode(t, snap), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if first.Counters.Names() != second.Counters.Names() || first.Stats.Names() != second.Stats.Names() {
		t.Fatal("two replies with the same names do not share them")
	}
	if v, _ := second.Counters.Get("share.c2"); v != stats.Int(20) {
		t.Fatalf("share.c2 = %v, want 20", v)
	}
	_, err = decodeWith(&d, encode(t, snap), Limits{MaxEntries: 10, MaxNameLen: 10})
	if err == nil || !strings.Contains(err.Error(), "name of 24 bytes, limit is 10") {
		t.Fatalf("a known name over a lower limit: %v", err)
	}
	other, err := decodeWith(&d, encode(t, stats.Snapshot{Counters: stats.SetOf(stats.Map{"share.c1": stats.Int(1)})}), DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if other.Counters.Names() == first.Counters.Names() || other.Counters.Len() != 1 {
		t.Fatalf("different names read as %v", other.Counters)
	}
}

// Past maxNameSets blobs, the map of blobs starts afresh rather than
// stopping to learn: the next new blob is shared again.
func TestNameSetsStayBounded(t *testing.T) {
	var d Decoder
	for i := range maxNameSets + 10 {
		snap := stats.Snapshot{Counters: stats.SetOf(stats.Map{fmt.Sprintf("bound.%d", i): stats.Int(1)})}
		a, err := decodeWith(&d, encode(t, snap), DefaultLimits)
		if err != nil {
			t.Fatal(err)
		}
		b, err := decodeWith(&d, encode(t, snap), DefaultLimits)
		if err != nil {
			t.Fatal(err)
		}
		if a.Counters.Names() != b.Counters.Names() {
			t.Fatalf("blob %d read twice is not shared", i)
		}
		if n := len(*d.nameSets.read.Load()); n > maxNameSets {
			t.Fatalf("%d blobs kept, bound is %d", n, maxNameSets)
		}
	}
}

// Each Decoder keeps its own caches: one decoder's nodes making up names
// never reset another's, replies are shared only within a decoder, and
// the hit rate counts what each decoder's cache served.
func TestDecodersKeepTheirOwnCaches(t *testing.T) {
	var a, b Decoder
	snap := stats.Snapshot{Counters: stats.SetOf(stats.Map{"own.c1": stats.Int(1)}), Stats: stats.SetOf(stats.Map{"own.s1": stats.Float(0.5)})}
	blob := encode(t, snap)
	a1, err := decodeWith(&a, blob, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if c := a.CacheStats(); c.Hits != 0 || c.Misses != 2 || c.NameSets != 2 || c.Interned != 2 {
		t.Fatalf("after one reply: %+v, want 0 hits, 2 misses, 2 blobs, 2 names", c)
	}
	b1, err := decodeWith(&b, blob, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if a1.Counters.Names() == b1.Counters.Names() {
		t.Fatal("two decoders share a Names")
	}
	// b's nodes make up names, far past the bounds: b starts afresh.
	for i := range maxNameSets + 10 {
		made := stats.Snapshot{Counters: stats.SetOf(stats.Map{fmt.Sprintf("made.up.%d", i): stats.Int(1)})}
		if _, err := decodeWith(&b, encode(t, made), DefaultLimits); err != nil {
			t.Fatal(err)
		}
	}
	// a still knows its blobs.
	a2, err := decodeWith(&a, blob, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if a2.Counters.Names() != a1.Counters.Names() || a2.Stats.Names() != a1.Stats.Names() {
		t.Fatal("another decoder's made-up names reset this one's cache")
	}
	c := a.CacheStats()
	if c.Hits != 2 || c.Misses != 2 || c.HitRate() != 0.5 {
		t.Fatalf("after the same reply again: %+v (rate %v), want 2 hits, 2 misses, rate 0.5", c, c.HitRate())
	}
	if cb := b.CacheStats(); cb.NameSets > maxNameSets || cb.Interned > maxInterned || cb.Misses < maxNameSets {
		t.Fatalf("the inventing decoder: %+v", cb)
	}
	if (CacheStats{}).HitRate() != 0 {
		t.Error("hit rate of nothing is not 0")
	}
}

// A zero Limits, or a zero field of one, means DefaultLimits' bound, never
// none; a negative field lifts its bound.
func TestZeroLimitsAreDefaults(t *testing.T) {
	many := stats.Map{}
	for i := range DefaultLimits.MaxEntries + 1 {
		many[fmt.Sprintf("e.%d", i)] = stats.Int(1)
	}
	if _, err := decode(encode(t, stats.Snapshot{Counters: stats.SetOf(many)}), Limits{}); err == nil ||
		!strings.Contains(err.Error(), fmt.Sprintf("limit is %d", DefaultLimits.MaxEntries)) {
		t.Errorf("one entry past the default under a zero Limits: %v", err)
	}
	long := stats.Snapshot{Stats: stats.SetOf(stats.Map{strings.Repeat("n", DefaultLimits.MaxNameLen+1): stats.Int(1)})}
	if _, err := decode(encode(t, long), Limits{MaxEntries: 5}); err == nil ||
		!strings.Contains(err.Error(), fmt.Sprintf("limit is %d", DefaultLimits.MaxNameLen)) {
		t.Errorf("a name past the default with MaxNameLen left zero: %v", err)
	}
	if _, err := decode(encode(t, long), Limits{MaxNameLen: -1}); err != nil {
		t.Errorf("a name past the default with no bound on names: %v", err)
	}
}
