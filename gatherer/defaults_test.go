package gatherer

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
)

// The zero Config works, and a gatherer given no Logger logs to
// slog.Default(), as every capstats library does, with the error under
// "err".
func TestZeroConfigLogsToSlogDefault(t *testing.T) {
	var buf bytes.Buffer
	saved := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, nil)))
	defer slog.SetDefault(saved)

	g, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatalf("a gatherer without a stats file: %v", err)
	}
	cfg := g.Config()
	if cfg.Interval <= 0 || cfg.Timeout <= 0 || cfg.WriteAfter <= 0 || cfg.MaxTimeouts <= 0 || cfg.Logger == nil || cfg.Now == nil {
		t.Errorf("defaults not filled in: %+v", cfg)
	}

	path := filepath.Join(t.TempDir(), "missing-dir", "stats.json")
	g, err = New(Config{StatsFile: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Write(); err == nil {
		t.Fatal("writing into a directory that does not exist succeeded")
	}
	g.Close()
	if out := buf.String(); !strings.Contains(out, "writing stats file failed") || !strings.Contains(out, " err=") {
		t.Errorf("slog.Default() got %q, want the failed write with err=", out)
	}
}
