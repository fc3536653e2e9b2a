package muninplugin

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// fixtureNow is the moment the fixture's timestamps are relative to:
//
//	storage-1        12.5 s old
//	my storage node  60 s old, a null stat, floats needing plain decimal
//	1st-helper       exactly 300 s old: still fresh; starts with a digit
//	old-node         300.5 s old: stale, so U; null stats
//	nœud été         5 s in the future; non-ASCII nickname
//	(no nickname)    1 s old; tub ID starts with a digit
var fixtureNow = time.Unix(1700000000, 0)

const fixture = "testdata/stats.json"

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s:\n--- got\n%s--- want\n%s", name, path, got, want)
	}
}

// runPlugin runs the plugin in-process against the fixture.
func runPlugin(t *testing.T, name, mode string, env ...string) []byte {
	t.Helper()
	var out bytes.Buffer
	p := &Plugin{
		Name:   name,
		Env:    append([]string{"PATH=/usr/bin", "statsfile=" + fixture}, env...),
		Now:    func() time.Time { return fixtureNow },
		Stdout: &out,
	}
	if err := p.Run(mode); err != nil {
		t.Fatalf("%s %s: %v", name, mode, err)
	}
	return out.Bytes()
}

func TestGoldenEveryGraph(t *testing.T) {
	original := 0
	for _, g := range Graphs() {
		if g.Addition {
			if !strings.Contains(strings.Join(g.Header, "\n"), "graph_category capstats\n") {
				t.Errorf("addition %s is not in the capstats category", g.Name)
			}
			continue
		}
		if Graphs()[original].Name != g.Name {
			t.Errorf("the original's graph %s comes after an addition", g.Name)
		}
		original++
	}
	if original != 26 {
		t.Fatalf("%d graphs of the original, want its 26", original)
	}
	for _, g := range Graphs() {
		t.Run(g.Name, func(t *testing.T) {
			config := runPlugin(t, g.Name, "config")
			golden(t, g.Name+".config", config)
			fetch := runPlugin(t, g.Name, "")
			golden(t, g.Name+".fetch", fetch)
			// "fetch" is the same as no argument, and ".py" is ignored.
			if again := runPlugin(t, InvocationName("/etc/munin/plugins/"+g.Name+".py"), "fetch"); !bytes.Equal(again, fetch) {
				t.Errorf("fetch under %s.py:\n%s", g.Name, again)
			}
			// Every config line is a header line or a series line of a
			// field that fetch reports, and the other way round.
			checkConsistent(t, g, config, fetch)
			// dirtyconfig: config followed by the values.
			dirty := runPlugin(t, g.Name, "config", "MUNIN_CAP_DIRTYCONFIG=1")
			if want := append(append([]byte{}, config...), fetch...); !bytes.Equal(dirty, want) {
				t.Errorf("dirtyconfig:\n%s\nwant\n%s", dirty, want)
			}
		})
	}
}

func checkConsistent(t *testing.T, g Graph, config, fetch []byte) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(string(config), "\n"), "\n")
	if len(lines) < len(g.Header) || strings.Join(lines[:len(g.Header)], "\n") != strings.Join(g.Header, "\n") {
		t.Fatalf("config does not start with the header lines:\n%s", config)
	}
	labels := map[string]bool{}
	for _, l := range lines[len(g.Header):] {
		field, _, _ := strings.Cut(l, ".")
		if strings.HasSuffix(l, ".label "+field) {
			labels[field] = true
		}
	}
	values := 0
	for _, l := range strings.Split(strings.TrimSuffix(string(fetch), "\n"), "\n") {
		if l == "" {
			continue
		}
		values++
		field, _, _ := strings.Cut(l, ".value ")
		if !labels[field] {
			t.Errorf("fetch reports %s, which config does not declare", field)
		}
	}
	if values != len(labels) {
		t.Errorf("config declares %d fields, fetch reports %d", len(labels), values)
	}
	if want := len(g.Header) + len(labels)*len(g.Series); len(lines) != want {
		t.Errorf("config has %d lines, want %d", len(lines), want)
	}
}

func TestGoldenMultigraph(t *testing.T) {
	env := "MUNIN_CAP_MULTIGRAPH=1"
	config := runPlugin(t, "tahoe_multigraph", "config", env)
	golden(t, "tahoe_multigraph.config", config)
	fetch := runPlugin(t, "tahoe_multigraph", "", env)
	golden(t, "tahoe_multigraph.fetch", fetch)
	dirty := runPlugin(t, "tahoe_multigraph", "config", env, "MUNIN_CAP_DIRTYCONFIG=1")
	golden(t, "tahoe_multigraph.dirtyconfig", dirty)
	// Each section is exactly what the single graph prints.
	var wantConfig, wantFetch []byte
	for _, g := range Graphs() {
		single := runPlugin(t, g.Name, "")
		if len(single) == 0 {
			continue
		}
		wantConfig = append(wantConfig, "multigraph "+g.Name+"\n"...)
		wantConfig = append(wantConfig, runPlugin(t, g.Name, "config")...)
		wantFetch = append(wantFetch, "multigraph "+g.Name+"\n"...)
		wantFetch = append(wantFetch, single...)
	}
	if !bytes.Equal(config, wantConfig) {
		t.Errorf("multigraph config is not the single graphs' configs")
	}
	if !bytes.Equal(fetch, wantFetch) {
		t.Errorf("multigraph fetch is not the single graphs' values")
	}
	// Any name ending in _multigraph will do.
	if other := runPlugin(t, "capstats_multigraph", "", env); !bytes.Equal(other, fetch) {
		t.Errorf("capstats_multigraph differs from tahoe_multigraph")
	}
}

func TestGoldenSuggestAutoconf(t *testing.T) {
	for _, name := range []string{"tahoe_", "tahoe_storage_allocated", "tahoe_multigraph", "anything"} {
		golden(t, "suggest", runPlugin(t, name, "suggest"))
		if got := string(runPlugin(t, name, "autoconf")); got != "yes\n" {
			t.Errorf("%s autoconf = %q, want yes", name, got)
		}
	}
}
