package muninplugin

import (
	"time"

	"capstats/statsfile"
)

// What the plugin prints, for the package's own tests: g's config and its
// values for f, and whether any node of f has g's stat.

func AppendConfig(b []byte, g Graph, f *statsfile.File) []byte {
	return newRenderer(f, time.Time{}).appendConfig(b, g)
}

func AppendFetch(b []byte, g Graph, f *statsfile.File, now time.Time) []byte {
	return newRenderer(f, now).appendFetch(b, g)
}

func HasData(g Graph, f *statsfile.File) bool {
	return newRenderer(f, time.Time{}).hasData(g)
}
