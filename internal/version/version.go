// Package version reports what a binary was built from, as --version
// prints it: the module version and the VCS revision that the go command
// stamps into every binary it builds inside a git checkout.
package version

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// Info is what a binary knows about its build.
type Info struct {
	Module    string // module version, "(devel)" when built without one
	Revision  string // VCS revision, empty when not built from a checkout
	Time      string // commit time of Revision (RFC 3339), if known
	Modified  bool   // the work tree had uncommitted changes
	GoVersion string
}

// Read returns the build information of the running binary.
func Read() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Info{Module: "(unknown)"}
	}
	return fromBuildInfo(bi)
}

func fromBuildInfo(bi *debug.BuildInfo) Info {
	in := Info{Module: bi.Main.Version, GoVersion: bi.GoVersion}
	if in.Module == "" {
		in.Module = "(devel)"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Revision = s.Value
		case "vcs.time":
			in.Time = s.Value
		case "vcs.modified":
			in.Modified = s.Value == "true"
		}
	}
	return in
}

// String is the one line --version prints, e.g.
// "gatherer v0.0.0-20261201094612-a012d04f3c1e (revision a012d04f3c1e..., 2026-12-01T09:46:12Z, go1.24.2)".
func String(prog string) string {
	return Read().Line(prog)
}

// Line formats in for the program prog.
func (in Info) Line(prog string) string {
	var extra []string
	if in.Revision != "" {
		r := "revision " + in.Revision
		if in.Modified {
			r += " (modified)"
		}
		extra = append(extra, r)
	} else {
		extra = append(extra, "no VCS revision")
	}
	if in.Time != "" {
		extra = append(extra, in.Time)
	}
	if in.GoVersion != "" {
		extra = append(extra, in.GoVersion)
	}
	return fmt.Sprintf("%s %s (%s)", prog, in.Module, strings.Join(extra, ", "))
}
