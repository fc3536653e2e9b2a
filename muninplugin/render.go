package muninplugin

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"capstats/stats"
	"capstats/statsfile"
)

// FieldName is a node's munin field name: <nickname>_<first 4 characters
// of the tub ID>, every character outside [A-Za-z0-9] replaced by "_" (one
// "_" per character, as Python's re.sub did on the unicode strings the
// original read), and a "_" in front when it would start with a digit, since
// munin field names must match [a-zA-Z_][a-zA-Z0-9_]*.
func FieldName(nickname, tubid string) string {
	return fieldName(nickname, tubid, 4)
}

// fieldName is FieldName with the first k characters of the tub ID.
func fieldName(nickname, tubid string, k int) string {
	var b strings.Builder
	b.Grow(len(nickname) + k + 2)
	smash(&b, nickname)
	b.WriteByte('_')
	n := 0
	for i := range tubid {
		if n == k {
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

// FieldNames returns the field name of every node of f, in file order,
// all distinct. A node whose FieldName another node earlier in the file
// already has (the same nickname, and a tub ID with the same first four
// characters, which anyone holding the furl can find in seconds) gets
// the tub-ID part lengthened, one character at a time, until its name is
// no other node's; every other node keeps FieldName, as the original
// printed it. The file keeps nodes in first-seen order, so a node's name
// does not change when a newcomer collides with it.
func FieldNames(f *statsfile.File) []string {
	names := make([]string, len(f.Nodes))
	// Every node's FieldName is reserved, so that a numbered name never
	// takes the plain name of a node later in the file.
	taken := make(map[string]int, len(f.Nodes))
	collide := false
	for i := range f.Nodes {
		names[i] = FieldName(f.Nodes[i].Nickname, f.Nodes[i].TubID)
		taken[names[i]]++
		collide = collide || taken[names[i]] > 1
	}
	if !collide {
		return names
	}
	used := make(map[string]bool, len(f.Nodes))
	for i := range f.Nodes {
		name := names[i]
		if taken[name] > 1 && used[name] {
			n := &f.Nodes[i]
			for k := 5; ; k++ {
				name = fieldName(n.Nickname, n.TubID, k)
				if extra := k - max(utf8.RuneCountInString(n.TubID), 4); extra > 0 {
					// The whole tub ID is not enough (a nickname that
					// smashes into another's, and the same tub ID):
					// number it.
					name += "_" + strconv.Itoa(extra+1)
				}
				if taken[name] == 0 && !used[name] {
					break
				}
			}
		}
		used[name] = true
		names[i] = name
	}
	return names
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
	return &renderer{f: f, now: float64(now.UnixNano()) / 1e9}
}

func (r *renderer) name(i int) string {
	if r.names == nil {
		r.names = FieldNames(r.f)
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
