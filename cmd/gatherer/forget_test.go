package main

import (
	"path/filepath"
	"strings"
	"testing"

	"capstats/gatherer"
	"capstats/muninplugin"
	"capstats/statsfile"
)

// TestForgetNamesTheLengthenedField: forgetting a node whose munin field
// name was lengthened after a collision prints that name, the one its
// RRDs are under, not the plain one the other node has.
func TestForgetNamesTheLengthenedField(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "g")
	if err := gatherer.Create(dir, gatherer.CreateOptions{Hostname: "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	first := "abcd" + strings.Repeat("a", 28)
	second := "abcd" + strings.Repeat("b", 28)
	f := &statsfile.File{Nodes: []statsfile.Node{
		{TubID: first, Nickname: "twin", Timestamp: 1},
		{TubID: second, Nickname: "twin", Timestamp: 2},
	}}
	if err := statsfile.WriteFile(filepath.Join(dir, gatherer.StatsFile), f); err != nil {
		t.Fatal(err)
	}
	names := muninplugin.FieldNames(f)
	if names[1] == muninplugin.FieldName("twin", second) {
		t.Fatalf("fixture does not collide: %v", names)
	}
	out, errOut, code := run(t, "--basedir", dir, "forget", second)
	if code != 0 {
		t.Fatalf("forget exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "-"+names[1]+"-[gd].rrd") {
		t.Errorf("forget output does not name the field %s:\n%s", names[1], out)
	}
}
