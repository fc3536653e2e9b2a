package version

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestLine(t *testing.T) {
	bi := &debug.BuildInfo{
		GoVersion: "go1.24.2",
		Main:      debug.Module{Path: "capstats", Version: "v0.0.0-20261201094612-a012d04f3c1e+dirty"},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "a012d04f3c1e0000000000000000000000000000"},
			{Key: "vcs.time", Value: "2026-12-01T09:46:12Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	got := fromBuildInfo(bi).Line("gatherer")
	want := "gatherer v0.0.0-20261201094612-a012d04f3c1e+dirty (revision a012d04f3c1e0000000000000000000000000000 (modified), 2026-12-01T09:46:12Z, go1.24.2)"
	if got != want {
		t.Errorf("Line:\n got %q\nwant %q", got, want)
	}
}

func TestLineWithoutVCS(t *testing.T) {
	got := fromBuildInfo(&debug.BuildInfo{GoVersion: "go1.24.2"}).Line("tahoe_stats")
	if want := "tahoe_stats (devel) (no VCS revision, go1.24.2)"; got != want {
		t.Errorf("Line: got %q, want %q", got, want)
	}
}

func TestReadInTestBinary(t *testing.T) {
	// A test binary has build info (no VCS stamp): Read must not panic and
	// must name the Go version.
	if in := Read(); !strings.HasPrefix(in.GoVersion, "go") {
		t.Errorf("Read().GoVersion = %q", in.GoVersion)
	}
}
