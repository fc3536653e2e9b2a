package muninplugin

import (
	"strings"
	"time"

	"capstats/stats"
	"capstats/statsfile"
)

// FieldName is a node's munin field name: <nickname>_<first 4 characters
// of the tub ID>, every character outside [A-Za-z0-9] replaced by "_" (one
// "_" per character, as Python's re.sub did on the unicode strings the
// original read), and a "_" in front when it would start with a digit, since
// munin field names must match [a-zA-Z_][a-zA-Z0-9_]*.
func FieldName(nickname, tubid string) string {
	var b strings.Builder
	b.Grow(len(nickname) + 6)
	smash(&b, nickname)
	b.WriteByte('_')
	n := 0
	for i := range tubid {
		if n == 4 {
			tubid = tubid[:i]
			break
		}
		n++
	}
	smash(&b, tubid)
	s := b.String()
	if s[0] >= '0' && s[0] <= '9' {
		s = "_" + s
	}
	return s
}

func smash(b *strings.Builder, s string) {
	for _, r := range s {
		if (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
}

// renderer prints graphs of one file at one moment, computing each node's
// field name once.
type renderer struct {
	f     *statsfile.File
	now   float64 // epoch seconds
	names []string
}

func newRenderer(f *statsfile.File, now time.Time) *renderer {
	return &renderer{f: f, now: float64(now.UnixNano()) / 1e9, names: make([]string, len(f.Nodes))}
}

func (r *renderer) name(i int) string {
	if r.names[i] == "" {
		n := &r.f.Nodes[i]
		r.names[i] = FieldName(n.Nickname, n.TubID)
	}
	return r.names[i]
}

// stat returns node i's value for g, and whether it has one: present and
// not null.
func (r *renderer) stat(i int, g Graph) (stats.Value, bool) {
	m := r.f.Nodes[i].Stats.Stats
	if g.Category == "counters" {
		m = r.f.Nodes[i].Stats.Counters
	}
	v, ok := m.Get(g.StatID)
	return v, ok && !v.IsNull()
}

func (r *renderer) hasData(g Graph) bool {
	for i := range r.f.Nodes {
		if _, ok := r.stat(i, g); ok {
			return true
		}
	}
	return false
}

func (r *renderer) appendConfig(b []byte, g Graph) []byte {
	for _, line := range g.Header {
		b = append(b, line...)
		b = append(b, '\n')
	}
	for i := range r.f.Nodes {
		if _, ok := r.stat(i, g); !ok {
			continue
		}
		name := r.name(i)
		for _, line := range g.Series {
			b = appendFormatted(b, line, name)
			b = append(b, '\n')
		}
	}
	return b
}

func (r *renderer) appendFetch(b []byte, g Graph) []byte {
	for i := range r.f.Nodes {
		v, ok := r.stat(i, g)
		if !ok {
			continue
		}
		b = append(b, r.name(i)...)
		b = append(b, ".value "...)
		if r.now-r.f.Nodes[i].Timestamp > StaleSeconds {
			b = append(b, 'U')
		} else {
			b = v.AppendDecimal(b)
		}
		b = append(b, '\n')
	}
	return b
}

// appendFormatted does what Python's `line % {"name": name}` did for the
// original's series lines: %(name)s becomes name and %% becomes %.
func appendFormatted(b []byte, line, name string) []byte {
	for {
		i := strings.IndexByte(line, '%')
		if i < 0 {
			return append(b, line...)
		}
		b = append(b, line[:i]...)
		line = line[i:]
		switch {
		case strings.HasPrefix(line, "%(name)s"):
			b = append(b, name...)
			line = line[len("%(name)s"):]
		case strings.HasPrefix(line, "%%"):
			b = append(b, '%')
			line = line[2:]
		default:
			b = append(b, '%')
			line = line[1:]
		}
	}
}

// AppendConfig appends g's config for f: the header lines, then the series
// lines for every node that has the stat, whatever its age.
func AppendConfig(b []byte, g Graph, f *statsfile.File) []byte {
	return newRenderer(f, time.Time{}).appendConfig(b, g)
}

// AppendFetch appends g's values for f at now: "NAME.value VALUE" for
// every node that has the stat, VALUE "U" when the node's data is more than
// StaleSeconds old.
func AppendFetch(b []byte, g Graph, f *statsfile.File, now time.Time) []byte {
	return newRenderer(f, now).appendFetch(b, g)
}

// HasData reports whether any node of f has g's stat (present, not null).
func HasData(g Graph, f *statsfile.File) bool {
	return newRenderer(f, time.Time{}).hasData(g)
}
