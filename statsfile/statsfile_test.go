package statsfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"capstats/internal/atomicfile"
	"capstats/stats"
)

// originalJSON is what the original Python gatherer wrote (json.dump of its
// dict of nodes, default separators, ensure_ascii): only timestamp, nickname
// and stats per node. Generated with Python's json module.
const originalJSON = `{"xfmyh4ysqx3r5pguvuziyzfgkdsqvmdb": {"timestamp": 1201746667.853089, "nickname": "storage-1 \u00e9t\u00e9", "stats": {"counters": {"storage_server.allocate": 12, "storage_server.bytes_added": 1048576}, "stats": {"storage_server.allocated": 0, "load_monitor.avg_load": 0.0015, "cpu_monitor.1min_avg": null, "node.uptime": 86400.25, "big": 12345678901234567890}}}, "a2bz5jz3mwrqh4jzcu2kk7vdqe5ojlg6": {"timestamp": 1201746660.1, "nickname": "", "stats": {"counters": {}, "stats": {"load_monitor.max_load": 1e-05, "x": 1e+22}}}}`

func TestDecodeOriginalFormat(t *testing.T) {
	f, err := Decode(strings.NewReader(originalJSON))
	if err != nil {
		t.Fatal(err)
	}
	want := &File{Nodes: []Node{
		{
			TubID:     "xfmyh4ysqx3r5pguvuziyzfgkdsqvmdb",
			Timestamp: 1201746667.853089,
			Nickname:  "storage-1 été",
			Stats: stats.Snapshot{
				Counters: stats.SetOf(stats.Map{
					"storage_server.allocate":    stats.Int(12),
					"storage_server.bytes_added": stats.Int(1048576),
				}),
				Stats: stats.SetOf(stats.Map{
					"storage_server.allocated": stats.Int(0),
					"load_monitor.avg_load":    stats.Float(0.0015),
					"cpu_monitor.1min_avg":     stats.Null(),
					"node.uptime":              stats.Float(86400.25),
					"big":                      stats.Float(12345678901234567890),
				}),
			},
		},
		{
			TubID:     "a2bz5jz3mwrqh4jzcu2kk7vdqe5ojlg6",
			Timestamp: 1201746660.1,
			Stats: stats.Snapshot{
				Counters: stats.SetOf(stats.Map{}),
				Stats: stats.SetOf(stats.Map{
					"load_monitor.max_load": stats.Float(1e-05),
					"x":                     stats.Float(1e22),
				}),
			},
		},
	}}
	if !sameFile(f, want) {
		t.Fatalf("decoded\n%#v\nwant\n%#v", f, want)
	}
	// The kinds matter, not just the numbers: ints stay ints.
	if k := f.Nodes[0].Stats.Stats.Map()["storage_server.allocated"].Kind(); k != stats.KindInt {
		t.Errorf("0 decoded as kind %v, want int", k)
	}
	if k := f.Nodes[0].Stats.Stats.Map()["node.uptime"].Kind(); k != stats.KindFloat {
		t.Errorf("86400.25 decoded as kind %v, want float", k)
	}
}

func TestDecodeIndentedAndExtraKeys(t *testing.T) {
	// Whitespace anywhere, keys in any order, unknown keys of any shape
	// ignored, nulls for strings read as "".
	in := "\r\n { \"b\" :\n {\n  \"stats\": {\"stats\": {\"s\": -1.5e3}, \"future\": [1, {\"x\": [true, false, null]}], \"counters\": {\"c\": -7}},\n" +
		"  \"extra\": {\"nested\": [[[]]], \"n\": -0.0, \"s\": \"\\u2603\"},\n" +
		"  \"nickname\": null, \"up\": true, \"last_error\": \"timeout\", \"last_poll\": 17, \"poll_seconds\": 0.25, \"timestamp\": 16\n" +
		" } ,\n \"a\": {} }\n\n"
	f, err := Decode(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := &File{Nodes: []Node{
		{TubID: "b", Timestamp: 16, Up: true, LastError: "timeout", LastPoll: 17, PollSeconds: 0.25,
			Stats: stats.Snapshot{Counters: stats.SetOf(stats.Map{"c": stats.Int(-7)}), Stats: stats.SetOf(stats.Map{"s": stats.Float(-1500)})}},
		{TubID: "a", Stats: stats.Snapshot{Counters: stats.SetOf(stats.Map{}), Stats: stats.SetOf(stats.Map{})}},
	}}
	if !sameFile(f, want) {
		t.Fatalf("decoded\n%#v\nwant\n%#v", f, want)
	}
}

func TestDecodePythonExtensionsAndBools(t *testing.T) {
	in := `{"t": {"timestamp": 1, "nickname": "n", "stats": {"counters": {"yes": true, "no": false},
		"stats": {"nan": NaN, "inf": Infinity, "ninf": -Infinity, "huge": 1e400, "tiny": 1e-400, "negzero": -0.0, "max": 9223372036854775807, "over": 9223372036854775808, "min": -9223372036854775808}}}}`
	f, err := Decode(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	n := f.Nodes[0]
	for k, want := range map[string]stats.Value{
		"nan": stats.Null(), "inf": stats.Null(), "ninf": stats.Null(), "huge": stats.Null(),
		"tiny": stats.Float(0), "max": stats.Int(math.MaxInt64), "over": stats.Float(9223372036854775808),
		"min": stats.Int(math.MinInt64),
	} {
		if got := n.Stats.Stats.Map()[k]; got != want {
			t.Errorf("%s = %v (%v), want %v (%v)", k, got, got.Kind(), want, want.Kind())
		}
	}
	if v := n.Stats.Stats.Map()["negzero"]; v.Kind() != stats.KindFloat || !math.Signbit(v.Float()) {
		t.Errorf("-0.0 = %v, want float -0", v)
	}
	if n.Stats.Counters.Map()["yes"] != stats.Int(1) || n.Stats.Counters.Map()["no"] != stats.Int(0) {
		t.Errorf("bools = %v, want 1 and 0", n.Stats.Counters)
	}
}

func TestDecodeKeepsFileOrderAndDuplicates(t *testing.T) {
	// Python's dict: a repeated key keeps its first position, last value.
	in := `{"z": {"nickname": "z1"}, "a": {"nickname": "a"}, "m": {"nickname": "m"}, "z": {"nickname": "z2"}}`
	f, err := Decode(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range f.Nodes {
		got = append(got, n.TubID+"="+n.Nickname)
	}
	if want := []string{"z=z2", "a=a", "m=m"}; !reflect.DeepEqual(got, want) {
		t.Errorf("nodes %v, want %v", got, want)
	}
	f, err = Decode(strings.NewReader(" {} "))
	if err != nil || len(f.Nodes) != 0 {
		t.Errorf("empty object: %v, %v", f, err)
	}
}

func TestDecodeStrings(t *testing.T) {
	for in, want := range map[string]string{
		`"plain"`:                 "plain",
		`"tab\there"`:             "tab\there",
		`"q\"b\\s\/"`:             "q\"b\\s/",
		`"\b\f\n\r\t"`:            "\b\f\n\r\t",
		`"\u00e9\u00E9"`:          "éé",
		`"\ud83d\ude00"`:          "😀",
		`"lone \ud83d x"`:         "lone \ufffd x",
		`"lone \ude00"`:           "lone \ufffd",
		`"pair-ish \ud83d\u0041"`: "pair-ish \ufffdA",
		"\"raw 😀 é\"":             "raw 😀 é",
		"\"bad \xff utf8\"":       "bad \ufffd utf8",
	} {
		f, err := Decode(strings.NewReader(`{"t": {"nickname": ` + in + `}}`))
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if got := f.Nodes[0].Nickname; got != want {
			t.Errorf("%s decoded as %q, want %q", in, got, want)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, c := range []struct{ in, msg string }{
		{"", "line 1, column 1: the file is empty"},
		{"  \n ", "line 2, column 2: the file is empty"},
		{"[]", "the stats file must be an object, found '['"},
		{"null", "the stats file must be an object"},
		{"{", "expected a quoted key (a tub ID), found end of file"},
		{`{"a": {}`, "expected ',' or '}' after a node, found end of file"},
		{`{"a": {}} x`, "line 1, column 11: unexpected 'x' after the end of the stats object"},
		{`{"a": {}}{}`, "unexpected '{' after the end"},
		{`{"a" {}}`, `expected ':' after key "a", found '{'`},
		{`{"a": []}`, `node "a" must be an object, found '['`},
		{`{"a": {"stats": []}}`, `node "a": "stats" must be an object`},
		{`{"a": {"stats": {"counters": 1}}}`, `node "a": "stats"."counters" must be an object`},
		{"{\"a\": {\"stats\": {\"stats\": {\n\"x\": \"1\"}}}}", `line 2, column 6: node "a": "stats"."stats": "x" must be a number or null, found '"'`},
		{`{"a": {"stats": {"stats": {"x": [1]}}}}`, `"x" must be a number or null, found '['`},
		{`{"a": {"stats": {"stats": {"x": 01}}}}`, `invalid number "01"`},
		{`{"a": {"stats": {"stats": {"x": 1.}}}}`, `expected a digit after '.'`},
		{`{"a": {"stats": {"stats": {"x": .5}}}}`, `"x" must be a number or null, found '.'`},
		{`{"a": {"stats": {"stats": {"x": -}}}}`, `invalid number: expected a digit, found '}'`},
		{`{"a": {"stats": {"stats": {"x": 1e}}}}`, `expected a digit in the exponent`},
		{`{"a": {"stats": {"stats": {"x": +1}}}}`, `must be a number or null, found '+'`},
		{`{"a": {"stats": {"stats": {"x": 1x}}}}`, `invalid number "1x"`},
		{`{"a": {"stats": {"stats": {"x": nul}}}}`, `must be a number or null, found 'n'`},
		{`{"a": {"stats": {"stats": {"x": 1,}}}}`, `expected a quoted key`},
		{`{"a": {"timestamp": "now"}}`, `node "a": "timestamp" must be a number, found '"'`},
		{`{"a": {"timestamp": null}}`, `"timestamp" must be a number`},
		{`{"a": {"timestamp": 1e999}}`, `"timestamp" is out of range`},
		{`{"a": {"timestamp": NaN}}`, `"timestamp" must be a number`},
		{`{"a": {"nickname": 5}}`, `"nickname" must be a string, found '5'`},
		{`{"a": {"up": 1}}`, `"up" must be true or false`},
		{"{\"a\": {\"nickname\": \"x\ny\"}}", "control character 0x0a in a string"},
		{`{"a": {"nickname": "x\q"}}`, `invalid escape '\q'`},
		{`{"a": {"nickname": "x\u12"}}`, `invalid \u escape`},
		{`{"a": {"nickname": "x`, "unterminated string"},
		{`{"a": {"nickname": "x\`, "unterminated string"},
		{`{"a": {"other": [1 2]}}`, "expected ',' or ']' in a nested value, found '2'"},
		{`{"a": {"other": {1: 2}}}`, "expected a quoted key in an object, found '1'"},
		{`{"a": {"other": tru}}`, "expected a JSON value, found 't'"},
		{`{"a": {"other": ` + strings.Repeat("[", 2000) + strings.Repeat("]", 2000) + `}}`, "nested more than 1000 deep"},
		{"\xef\xbb\xbf{}", "must be an object, found byte 0xef"},
	} {
		_, err := Decode(strings.NewReader(c.in))
		if err == nil {
			t.Errorf("%q: no error, want %q", c.in, c.msg)
			continue
		}
		if !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%q:\n got error %q\nwant it to contain %q", c.in, err, c.msg)
		}
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("%q: error %v is not a *SyntaxError", c.in, err)
		}
	}
}

// sample is a File using every feature of the format.
func sample() *File {
	return &File{Nodes: []Node{
		{
			TubID: "xfmyh4ysqx3r5pguvuziyzfgkdsqvmdb", Timestamp: 1700000000.123456, Nickname: "storage 1",
			Stats: stats.Snapshot{
				Counters: stats.SetOf(stats.Map{"storage_server.allocate": stats.Int(3), "storage_server.bytes_added": stats.Int(1 << 40)}),
				Stats: stats.SetOf(stats.Map{
					"storage_server.allocated": stats.Int(0), "load_monitor.avg_load": stats.Float(0.0015),
					"cpu_monitor.1min_avg": stats.Null(), "whole": stats.Float(2), "neg": stats.Int(-5),
					"tiny": stats.Float(5e-324), "big": stats.Float(1.5e300), "negzero": stats.Float(math.Copysign(0, -1)),
				}),
			},
			Up: true, LastPoll: 1700000000.2, PollSeconds: 0.000113,
		},
		{
			TubID: "zz", Timestamp: 1e-9, Nickname: "quote\" back\\ nl\n tab\t ctl\x01\x7f é 😀 \u2028 bad\xff",
			Stats:     stats.Snapshot{Counters: stats.SetOf(stats.Map{}), Stats: stats.SetOf(stats.Map{"weird \"key\"\n": stats.Int(1)})},
			LastError: "get_stats: context deadline exceeded", LastPoll: 1700000060, PollSeconds: 10,
		},
		{TubID: "", Timestamp: 0, Stats: stats.Snapshot{Counters: stats.SetOf(stats.Map{}), Stats: stats.SetOf(stats.Map{})}},
	}}
}

func TestRoundTrip(t *testing.T) {
	f := sample()
	enc := f.AppendJSON(nil)
	if !json.Valid(enc) {
		t.Fatalf("AppendJSON wrote invalid JSON:\n%s", enc)
	}
	got, err := Decode(bytes.NewReader(enc))
	if err != nil {
		t.Fatalf("%v\n%s", err, enc)
	}
	// Invalid UTF-8 is written as U+FFFD, everything else comes back.
	want := sample()
	want.Nodes[1].Nickname = strings.ReplaceAll(want.Nodes[1].Nickname, "\xff", "\ufffd")
	if !sameFile(got, want) {
		t.Fatalf("round trip:\n got %#v\nwant %#v\nJSON:\n%s", got, want, enc)
	}
	if again := got.AppendJSON(nil); !bytes.Equal(again, enc) {
		t.Errorf("second encoding differs:\n%s\n%s", enc, again)
	}
	// encoding/json agrees on what the output means.
	var generic map[string]struct {
		Nickname string                     `json:"nickname"`
		Stats    map[string]json.RawMessage `json:"stats"`
	}
	if err := json.Unmarshal(enc, &generic); err != nil {
		t.Fatal(err)
	}
	if nick := generic["zz"].Nickname; nick != want.Nodes[1].Nickname {
		t.Errorf("encoding/json reads nickname %q, want %q", nick, want.Nodes[1].Nickname)
	}
}

func TestAppendJSONFormat(t *testing.T) {
	f := &File{Nodes: []Node{{
		TubID: "t", Timestamp: 1700000000, Nickname: "n",
		Stats: stats.Snapshot{
			Counters: stats.SetOf(stats.Map{"b": stats.Int(2), "a": stats.Int(1)}),
			Stats:    stats.SetOf(stats.Map{"z": stats.Null(), "y": stats.Float(1), "x": stats.Float(0.5)}),
		},
		PollSeconds: 1e-7,
	}}}
	want := `{
"t": {"timestamp": 1700000000.0, "nickname": "n", "stats": {"counters": {"a": 1, "b": 2}, "stats": {"x": 0.5, "y": 1.0, "z": null}}, "up": false, "last_poll": 0.0, "last_error": "", "poll_seconds": 1e-07}
}
`
	if got := string(f.AppendJSON(nil)); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	// Nil maps are written as empty objects; no nodes is an empty object.
	if got := string((&File{Nodes: []Node{{TubID: "t"}}}).AppendJSON(nil)); !strings.Contains(got, `"stats": {"counters": {}, "stats": {}}`) {
		t.Errorf("nil maps: %s", got)
	}
	if got := string((&File{}).AppendJSON([]byte("x"))); got != "x{}\n" {
		t.Errorf("empty file: %q", got)
	}
	if got := string(appendTime(nil, math.NaN())); got != "0.0" {
		t.Errorf("NaN time written as %s", got)
	}
}

func TestLoadErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.json")
	_, err := Load(missing)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: %v; want fs.ErrNotExist naming %s", err, missing)
	}
	corrupt := filepath.Join(dir, "stats.json")
	if err := os.WriteFile(corrupt, []byte(`{"a": {"timestamp": 1,`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(corrupt)
	if err == nil || !strings.Contains(err.Error(), corrupt) || !strings.Contains(err.Error(), "line 1, column 23") {
		t.Errorf("corrupt file: %v; want an error naming %s and the position", err, corrupt)
	}
	var se *SyntaxError
	if !errors.As(err, &se) || se.Offset != 22 {
		t.Errorf("corrupt file: %#v, want a *SyntaxError at offset 22", se)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("directory: %v", err)
	}
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "stats.json")
	f := sample()
	if err := WriteFile(path, f); err != nil {
		t.Fatal(err)
	}
	if names := listDir(t, dir); !reflect.DeepEqual(names, []string{"stats.json"}) {
		t.Errorf("dir holds %v after the write, want only stats.json", names)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Nodes) != 3 || got.Nodes[0].Stats.Counters.Map()["storage_server.bytes_added"] != stats.Int(1<<40) {
		t.Errorf("read back %#v", got)
	}
	// Replacing it.
	f.Nodes = f.Nodes[:1]
	if err := WriteFile(path, f); err != nil {
		t.Fatal(err)
	}
	if got, err := Load(path); err != nil || len(got.Nodes) != 1 {
		t.Errorf("after the second write: %v nodes, %v", got, err)
	}
	if names := listDir(t, dir); !reflect.DeepEqual(names, []string{"stats.json"}) {
		t.Errorf("dir holds %v after the second write", names)
	}
}

// checkUntouched fails unless dir holds exactly stats.json with content old.
func checkUntouched(t *testing.T, dir string, old []byte) {
	t.Helper()
	if names := listDir(t, dir); !reflect.DeepEqual(names, []string{"stats.json"}) {
		t.Errorf("dir holds %v after a failed write, want only stats.json", names)
	}
	cur, err := os.ReadFile(filepath.Join(dir, "stats.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cur, old) {
		t.Errorf("a failed write changed the old file")
	}
}

// Real failures, not injected ones; these work as root too, which ignores
// directory permissions.
func TestWriteFileRealFailures(t *testing.T) {
	t.Run("parent is a regular file", func(t *testing.T) {
		dir := t.TempDir()
		parent := filepath.Join(dir, "file")
		if err := os.WriteFile(parent, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(parent, "stats.json")
		err := WriteFile(path, sample())
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("err = %v, want an error naming %s", err, path)
		}
	})
	t.Run("parent does not exist", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "gone", "stats.json")
		if err := WriteFile(path, sample()); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("err = %v, want fs.ErrNotExist", err)
		}
	})
	t.Run("rename fails: target is a non-empty directory", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "stats.json")
		if err := os.MkdirAll(filepath.Join(path, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := WriteFile(path, sample()); err == nil {
			t.Fatal("rename over a non-empty directory succeeded")
		}
		if names := listDir(t, dir); !reflect.DeepEqual(names, []string{"stats.json"}) {
			t.Errorf("dir holds %v after a failed rename, want only stats.json", names)
		}
		if fi, err := os.Stat(filepath.Join(path, "sub")); err != nil || !fi.IsDir() {
			t.Errorf("target directory disturbed: %v", err)
		}
	})
}

func TestCleanTemp(t *testing.T) {
	dir := t.TempDir()
	keep := []string{"stats.json", ".stats.json.tmp-short", "stats.json.tmp-0123456789abcdef", ".x.tmp-0123456789ABCDEF", "other"}
	remove := []string{".stats.json.tmp-0123456789abcdef", ".foo.json.tmp-fedcba9876543210"}
	for _, n := range append(append([]string{}, keep...), remove...) {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, ".d.tmp-0123456789abcdef"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := CleanTemp(dir); err != nil {
		t.Fatal(err)
	}
	want := append([]string{".d.tmp-0123456789abcdef"}, keep...)
	got := listDir(t, dir)
	for _, w := range want {
		if !strings.Contains(strings.Join(got, "\n")+"\n", w+"\n") {
			t.Errorf("CleanTemp removed %s", w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("after CleanTemp: %v, want %v", got, want)
	}
	// A real leftover, as a crash between create and rename leaves it.
	tmp, _ := atomicfile.TempName(filepath.Join(dir, "stats.json"))
	if err := os.WriteFile(tmp, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := CleanTemp(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("CleanTemp left %s: %v", tmp, err)
	}
	if err := CleanTemp(filepath.Join(dir, "missing")); err == nil {
		t.Error("CleanTemp of a missing dir succeeded")
	}
}

func TestSyntaxErrorMessage(t *testing.T) {
	_, err := Decode(strings.NewReader("{\n  \"a\": 1}"))
	if got, want := err.Error(), `statsfile: line 2, column 8: node "a" must be an object, found '1'`; got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func ExampleFile_AppendJSON() {
	f := &File{Nodes: []Node{{
		TubID: "xfmyh4ysqx3r5pguvuziyzfgkdsqvmdb", Timestamp: 1700000000.5, Nickname: "storage-1",
		Stats: stats.Snapshot{
			Counters: stats.SetOf(stats.Map{"storage_server.allocate": stats.Int(12)}),
			Stats:    stats.SetOf(stats.Map{"storage_server.allocated": stats.Int(0), "cpu_monitor.1min_avg": stats.Null()}),
		},
		Up: true, LastPoll: 1700000000.5, PollSeconds: 0.0011,
	}}}
	fmt.Print(string(f.AppendJSON(nil)))
	// Output:
	// {
	// "xfmyh4ysqx3r5pguvuziyzfgkdsqvmdb": {"timestamp": 1700000000.5, "nickname": "storage-1", "stats": {"counters": {"storage_server.allocate": 12}, "stats": {"cpu_monitor.1min_avg": null, "storage_server.allocated": 0}}, "up": true, "last_poll": 1700000000.5, "last_error": "", "poll_seconds": 0.0011}
	// }
}

func TestDecodeFiltered(t *testing.T) {
	var calls []string
	keep := func(category, name string) bool {
		calls = append(calls, category+" "+name)
		return (category == "stats" && name == "storage_server.allocated") || (category == "counters" && name == "c")
	}
	in := `{"a": {"stats": {"counters": {"c": 1, "d": 2}, "stats": {"storage_server.allocated": 5, "c": 3}}},
		"b": {"stats": {"counters": {"c": 4}, "stats": {"storage_server.allocated": null}}}, "e": {}}`
	f, err := DecodeFiltered(strings.NewReader(in), keep)
	if err != nil {
		t.Fatal(err)
	}
	want := &File{Nodes: []Node{
		{TubID: "a", Stats: stats.Snapshot{Counters: stats.SetOf(stats.Map{"c": stats.Int(1)}), Stats: stats.SetOf(stats.Map{"storage_server.allocated": stats.Int(5)})}},
		{TubID: "b", Stats: stats.Snapshot{Counters: stats.SetOf(stats.Map{"c": stats.Int(4)}), Stats: stats.SetOf(stats.Map{"storage_server.allocated": stats.Null()})}},
		{TubID: "e", Stats: stats.Snapshot{Counters: stats.SetOf(stats.Map{}), Stats: stats.SetOf(stats.Map{})}},
	}}
	if !sameFile(f, want) {
		t.Errorf("got %#v\nwant %#v", f, want)
	}
	// Asked once per distinct name, for both categories.
	if len(calls) != 6 {
		t.Errorf("keep called %d times: %v", len(calls), calls)
	}
	// Filtering does not loosen the checks.
	if _, err := DecodeFiltered(strings.NewReader(`{"a": {"stats": {"counters": {"x": "1"}}}}`), keep); err == nil {
		t.Error("a malformed unkept value was accepted")
	}
	path := filepath.Join(t.TempDir(), "stats.json")
	if err := os.WriteFile(path, []byte(in), 0o644); err != nil {
		t.Fatal(err)
	}
	if g, err := LoadFiltered(path, keep); err != nil || !sameFile(g, want) {
		t.Errorf("LoadFiltered: %#v, %v", g, err)
	}
}

func TestSpecial8(t *testing.T) {
	for c := 0; c < 256; c++ {
		for pos := 0; pos < 8; pos++ {
			w := []byte("abcdefgh")
			w[pos] = byte(c)
			got := special8(uint64(w[0]) | uint64(w[1])<<8 | uint64(w[2])<<16 | uint64(w[3])<<24 |
				uint64(w[4])<<32 | uint64(w[5])<<40 | uint64(w[6])<<48 | uint64(w[7])<<56)
			if want := !plain[c]; got != want {
				t.Fatalf("special8 with byte 0x%02x at %d = %v, want %v", c, pos, got, want)
			}
		}
	}
}

// Sets are written with their names sorted, whatever order they hold them
// in (a node's order, as decoded from the wire), and whether their Names are
// shared with another Set or not.
func TestAppendJSONSortsEverySet(t *testing.T) {
	sortedJSON := func(m stats.Map) string {
		keys := slices.Sorted(maps.Keys(m))
		var b []byte
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = strconv.AppendQuote(b, k)
			b = append(b, ": "...)
			b = m[k].AppendJSON(b)
		}
		return string(append(b, '}'))
	}
	cba, err := stats.NewNames([]string{"c", "b", "a"})
	if err != nil {
		t.Fatal(err)
	}
	sets := []stats.Set{
		stats.NewSet(cba, []stats.Value{stats.Int(3), stats.Null(), stats.Float(0.5)}),
		stats.NewSet(cba, []stats.Value{stats.Int(4), stats.Int(2), stats.Float(1.5)}), // shares cba's order
		stats.SetOf(stats.Map{"z": stats.Int(1), "y.a": stats.Int(2), "y": stats.Int(3)}),
		{},
	}
	for range 2 { // the order worked out, then reused
		for _, set := range sets {
			if got, want := string(appendSet(nil, set)), sortedJSON(set.Map()); got != want {
				t.Fatalf("got %s, want %s", got, want)
			}
		}
	}
}

// sameFile reports whether a and b hold the same nodes with the same
// values, in the same node order; a Set's order of names does not count.
func sameFile(a, b *File) bool {
	if len(a.Nodes) != len(b.Nodes) {
		return false
	}
	for i := range a.Nodes {
		x, y := a.Nodes[i], b.Nodes[i]
		if !x.Stats.Counters.Equal(y.Stats.Counters) || !x.Stats.Stats.Equal(y.Stats.Stats) {
			return false
		}
		x.Stats, y.Stats = stats.Snapshot{}, stats.Snapshot{}
		if !reflect.DeepEqual(x, y) {
			return false
		}
	}
	return true
}

// Nodes that report the same names share one stats.Names; a name repeated
// within an object keeps its first place and its last value, as a dict does.
func TestDecodeSharesNames(t *testing.T) {
	in := `{"a": {"stats": {"counters": {"c": 1}, "stats": {"x": 1, "y": 2}}},
"b": {"stats": {"counters": {"c": 2}, "stats": {"x": 3, "y": 4}}},
"c": {"stats": {"stats": {"y": 5, "x": 6, "y": 7}}}}`
	f, err := Decode(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := f.Nodes[0].Stats, f.Nodes[1].Stats, f.Nodes[2].Stats
	if a.Stats.Names() != b.Stats.Names() || a.Counters.Names() != b.Counters.Names() {
		t.Fatal("nodes with the same names do not share them")
	}
	if got := strings.Join(c.Stats.Names().List(), " "); got != "y x" {
		t.Fatalf("node c's names: %s, want y x", got)
	}
	if !c.Stats.Equal(stats.SetOf(stats.Map{"x": stats.Int(6), "y": stats.Int(7)})) {
		t.Fatalf("node c's stats: %v", c.Stats)
	}
	if c.Counters.Len() != 0 {
		t.Fatalf("node c's counters: %v", c.Counters)
	}
}
