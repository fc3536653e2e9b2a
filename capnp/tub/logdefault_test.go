package tub

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// A tub given no Logger logs to slog.Default(), as every capstats library
// does.
func TestNoLoggerMeansSlogDefault(t *testing.T) {
	var buf bytes.Buffer
	saved := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, nil)))
	defer slog.SetDefault(saved)
	Options{}.logger().Warn("from the tub", "err", "x")
	if !strings.Contains(buf.String(), "from the tub") {
		t.Errorf("slog.Default() got %q", buf.String())
	}
}
