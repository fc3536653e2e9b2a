package muninplugin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The zero Plugin works: it fails with an error, not a panic, and a
// Plugin without Stdout writes to os.Stdout, where munin reads.
func TestZeroPlugin(t *testing.T) {
	var zero Plugin
	if err := zero.Run(""); err == nil {
		t.Error("a Plugin with no name and no stats file succeeded")
	}

	good, err := filepath.Abs(filepath.Join("testdata", "stats.json"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.CreateTemp(t.TempDir(), "stdout")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	saved := os.Stdout
	os.Stdout = out
	defer func() { os.Stdout = saved }()
	p := Plugin{Name: "tahoe_storage_allocated", StatsFile: good, Now: func() time.Time { return fixtureNow }}
	if err := p.Run("config"); err != nil {
		t.Fatal(err)
	}
	os.Stdout = saved
	b, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "graph_title ") {
		t.Errorf("os.Stdout got %q, want the graph's config", b)
	}
}
