// Package omtest holds test helpers for expositions: running the real
// `promtool check metrics` (Debian package prometheus) on them.
package omtest

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Promtool runs `promtool check metrics` on data and returns the problems it
// reports, one per line (none means it is clean). promtool reads the
// Prometheus text format 0.0.4, so use it on that format; on OpenMetrics it
// reports every counter's _total sample as a family of its own with "no help
// text". Without promtool the test fails and says to run `make deps`, or is
// skipped with -short.
func Promtool(t testing.TB, data []byte) []string {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		if testing.Short() {
			t.Skip("promtool not installed (skipped with -short)")
		}
		t.Fatalf("promtool not found (%v): run `make deps` (it installs the Debian package prometheus, which provides /usr/bin/promtool)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "check", "metrics")
	cmd.Stdin = bytes.NewReader(data)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	var problems []string
	for _, l := range strings.Split(out.String(), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			problems = append(problems, l)
		}
	}
	if err != nil && len(problems) == 0 {
		t.Fatalf("promtool check metrics failed without saying why: %v", err)
	}
	return problems
}
