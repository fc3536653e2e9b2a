package muninplugin

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

var (
	fetchLine  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*\.value (U|-?[0-9]+(\.[0-9]+)?)$`)
	seriesLine = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*\.(label [A-Za-z_][A-Za-z0-9_]*|draw LINE1|type DERIVE|min 0)$`)
	graphLine  = regexp.MustCompile(`^(graph_[a-z]+ .*|multigraph tahoe_[a-z_]+)$`)
	suggestion = regexp.MustCompile(`^[a-z_]+$`)
)

// FuzzPlugin feeds arbitrary stats files to every mode of the plugin: it
// never panics, and whatever it prints is valid munin output.
func FuzzPlugin(f *testing.F) {
	data, err := os.ReadFile(fixture)
	if err != nil {
		f.Fatal(err)
	}
	modes := []string{"", "config", "autoconf", "suggest"}
	for i := range modes {
		f.Add(data, uint8(i), uint8(3), true)
		f.Add(data, uint8(i), uint8(26), true)
	}
	f.Add([]byte(`{"1": {"timestamp": 1e300, "nickname": "\u0000", "stats": {"stats": {"storage_server.allocated": -1e-300}}}}`), uint8(0), uint8(3), false)
	f.Add([]byte(`{"": {"stats": {"counters": {"storage_server.allocate": 1e22}}}}`), uint8(1), uint8(6), true)
	f.Add([]byte(`{`), uint8(2), uint8(0), false)
	f.Fuzz(func(t *testing.T, data []byte, mode, graph uint8, dirty bool) {
		name := "tahoe_multigraph"
		if gs := Graphs(); int(graph) < len(gs) {
			name = gs[graph].Name
		}
		env := []string{"statsfile=/fuzz/stats.json", "MUNIN_CAP_MULTIGRAPH=1"}
		if dirty {
			env = append(env, "MUNIN_CAP_DIRTYCONFIG=1")
		}
		var out bytes.Buffer
		m := modes[int(mode)%len(modes)]
		p := &Plugin{Name: name, Env: env, Now: func() time.Time { return fixtureNow }, Stdout: &out, content: data}
		if err := p.Run(m); err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error on several lines: %q", err)
			}
			return
		}
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		if out.Len() > 0 && !strings.HasSuffix(out.String(), "\n") {
			t.Fatalf("output does not end with a newline: %q", out.String())
		}
		for _, l := range lines {
			if out.Len() == 0 {
				break
			}
			var ok bool
			switch m {
			case "autoconf":
				ok = len(lines) == 1 && (l == "yes" || strings.HasPrefix(l, "no (") && strings.HasSuffix(l, ")"))
			case "suggest":
				ok = suggestion.MatchString(l)
			default:
				ok = fetchLine.MatchString(l) || (m == "config" && (seriesLine.MatchString(l) || graphLine.MatchString(l))) ||
					(m == "" && strings.HasPrefix(l, "multigraph "))
			}
			if !ok {
				t.Fatalf("%s %s: bad line %q in\n%s", name, m, l, out.String())
			}
		}
	})
}
