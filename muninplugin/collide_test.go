package muninplugin

import (
	"strings"
	"testing"
	"time"

	"capstats/stats"
	"capstats/statsfile"
)

func collisionFile(withAttackers bool) *statsfile.File {
	snap := stats.Snapshot{Stats: stats.SetOf(stats.Map{"storage_server.allocated": stats.Int(7)})}
	ts := float64(fixtureNow.Unix())
	node := func(nick, tubid string) statsfile.Node {
		return statsfile.Node{TubID: tubid, Nickname: nick, Timestamp: ts, Up: true, Stats: snap}
	}
	f := &statsfile.File{Nodes: []statsfile.Node{
		node("storage", "abcdefghijklmnopqrstuvwxyz234567"), // the victim, first seen
		node("other", "zzzzefghijklmnopqrstuvwxyz234567"),
	}}
	if withAttackers {
		f.Nodes = append(f.Nodes,
			node("storage", "abcdxxxxjklmnopqrstuvwxyz234567a"), // same nickname, same first 4
			node("storage", "abcdxyyyjklmnopqrstuvwxyz234567a"), // and the same first 5 as that one
			node("st rage", "abcdyyyyjklmnopqrstuvwxyz234567a"), // a name of its own
			node("st-rage", "abcdzzzzjklmnopqrstuvwxyz234567a"), // "-" and " " both smash to "_"
		)
	}
	return f
}

func TestFieldNamesDistinctAndStable(t *testing.T) {
	f := collisionFile(true)
	got := FieldNames(f)
	want := []string{"storage_abcd", "other_zzzz", "storage_abcdx", "storage_abcdxy", "st_rage_abcd", "st_rage_abcdz"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("FieldNames:\n got %v\nwant %v", got, want)
	}
	seen := map[string]bool{}
	for _, n := range got {
		if seen[n] {
			t.Errorf("%s twice", n)
		}
		seen[n] = true
	}
	// Nodes without a collision have FieldName, as the original printed.
	plain := FieldNames(collisionFile(false))
	for i, n := range plain {
		if n != FieldName(f.Nodes[i].Nickname, f.Nodes[i].TubID) || n != got[i] {
			t.Errorf("node %d: %s without attackers, %s with", i, n, got[i])
		}
	}
	// Same file, same names.
	if again := FieldNames(f); strings.Join(again, " ") != strings.Join(got, " ") {
		t.Errorf("not stable: %v then %v", got, again)
	}
	// A whole tub ID that is still not enough gets a number.
	dup := &statsfile.File{Nodes: []statsfile.Node{{Nickname: "a_b", TubID: "cd"}, {Nickname: "a-b", TubID: "cd"}}}
	if n := FieldNames(dup); n[0] != "a_b_cd" || n[1] != "a_b_cd_2" {
		t.Errorf("%v", n)
	}
}

func TestCollidingNodesPrintDistinctLines(t *testing.T) {
	g, ok := LookupGraph("tahoe_storage_allocated")
	if !ok {
		t.Fatal("no graph tahoe_storage_allocated")
	}
	lines := func(f *statsfile.File) []string {
		b := AppendConfig(nil, g, f)
		b = AppendFetch(b, g, f, fixtureNow.Add(time.Second))
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
	with, without := lines(collisionFile(true)), lines(collisionFile(false))
	// Every line printed without the attackers is printed with them too.
	have := map[string]int{}
	for _, l := range with {
		have[l]++
	}
	for _, l := range without {
		if have[l] == 0 {
			t.Errorf("line %q lost when colliding nodes arrived", l)
		}
	}
	// No field is printed twice.
	values := map[string]int{}
	for _, l := range with {
		if strings.HasSuffix(strings.Fields(l)[0], ".value") {
			values[strings.Fields(l)[0]]++
		}
	}
	if len(values) != 6 {
		t.Errorf("%d distinct .value fields for 6 nodes: %v", len(values), values)
	}
	for f, n := range values {
		if n != 1 {
			t.Errorf("%s printed %d times", f, n)
		}
	}
}
