package web

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"capstats/openmetrics"
	"capstats/stats"
	"capstats/statsfile"
)

func snapOf(n int, prefix string) stats.Snapshot {
	m := stats.Map{}
	for i := range n {
		m[fmt.Sprintf("%s.s%05d", prefix, i)] = stats.Int(int64(i))
	}
	return stats.Snapshot{Stats: stats.SetOf(m)}
}

func TestCapSeriesSharesFairly(t *testing.T) {
	nodes := []openmetrics.Node{{Stats: snapOf(10, "a")}, {Stats: snapOf(1000, "b")}, {Stats: snapOf(10, "c")}, {Stats: snapOf(500, "d")}}
	dropped := capSeries(nodes, 200)
	got := []int{}
	for _, n := range nodes {
		got = append(got, n.Stats.Stats.Len())
	}
	// 10 + 10 kept whole; the two big ones share the other 180.
	if want := []int{10, 90, 10, 90}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("kept %v, want %v", got, want)
	}
	if dropped != 1000+500-180 {
		t.Errorf("dropped %d", dropped)
	}
	// The first entries in name order are the ones kept.
	if _, ok := nodes[1].Stats.Stats.Get("b.s00089"); !ok {
		t.Error("b.s00089 cut")
	}
	if _, ok := nodes[1].Stats.Stats.Get("b.s00090"); ok {
		t.Error("b.s00090 kept")
	}
	if capSeries(nodes, 200) != 0 {
		t.Error("a second pass cut more")
	}
}

func TestMetricsSeriesBounded(t *testing.T) {
	src := &fakeSource{file: &statsfile.File{}}
	fresh := epoch(now.Add(-time.Second))
	for i := range 20 {
		n := 30
		if i < 2 {
			n = 2000 // two nodes sending the most a reply may hold
		}
		src.file.Nodes = append(src.file.Nodes, statsfile.Node{TubID: strings.Repeat(string(rune('a'+i)), 32), Up: true, Timestamp: fresh, LastPoll: fresh, Stats: snapOf(n, "x")})
	}
	h := New(src, Options{Interval: time.Minute, MaxSeries: 1000, Now: func() time.Time { return now }})
	text := do(h, "GET", "/metrics").Body.String()
	// 18 × 30 = 540 kept whole, the two big ones get 230 each.
	if n := strings.Count(text, "\nx_s"); n != 1000 {
		t.Errorf("%d node series, bound 1000", n)
	}
	want := `capstats_gatherer_exposition_dropped_entries{reason="series_limit"} ` + strconv.Itoa(2*2000-2*230) + "\n"
	if !strings.Contains(text, want) {
		t.Errorf("/metrics lacks %q", want)
	}
	if !strings.Contains(text, `x_s00029{tubid="tttttttttttttttttttttttttttttttt",nickname=""} 29`) {
		t.Error("a node with a usual number of entries lost some")
	}
}
