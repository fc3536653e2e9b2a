package statsfile

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzDecode: Decode never panics, and whatever it accepts survives
// AppendJSON + Decode unchanged (and re-encodes to the same bytes). Where
// the input is also standard JSON, encoding/json agrees on the tub IDs and
// nicknames (the string unescaping).
func FuzzDecode(f *testing.F) {
	f.Add([]byte(originalJSON))
	f.Add(sample().AppendJSON(nil))
	f.Add(benchFile(3, 4).AppendJSON(nil))
	for _, s := range []string{
		``, `{}`, `{"a": {}}`, `[]`, `{"a": {"stats": {"stats": {"x": NaN, "y": -Infinity, "z": true}}}}`,
		`{"a": {"nickname": "\ud83d\ude00 \ud800 \u00e9", "timestamp": -0.0, "x": [{"y": [1e400]}]}}`,
		`{"a": {"stats": {"counters": {"n": 123456789012345678901234567890, "m": -0, "k": 1E+2}}}}`,
		`{"a": {"up": true, "last_poll": 1.5, "last_error": null, "poll_seconds": 2}, "a": {"nickname": "dup"}}`,
		"{\"a\": {\"nickname\": \"\xff\xfe raw\"}}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Decode(bytes.NewReader(data))
		if err != nil {
			return
		}
		enc := file.AppendJSON(nil)
		if !json.Valid(enc) {
			t.Fatalf("AppendJSON wrote invalid JSON:\n%s", enc)
		}
		again, err := Decode(bytes.NewReader(enc))
		if err != nil {
			t.Fatalf("Decode of our own output: %v\n%s", err, enc)
		}
		if !sameFile(file, again) {
			t.Fatalf("round trip changed the file:\n%#v\n%#v", file, again)
		}
		if enc2 := again.AppendJSON(nil); !bytes.Equal(enc, enc2) {
			t.Fatalf("re-encoding differs:\n%s\n%s", enc, enc2)
		}
		if !json.Valid(data) || !bytes.ContainsRune(data, '"') {
			return
		}
		var generic map[string]map[string]json.RawMessage
		if err := json.Unmarshal(data, &generic); err != nil {
			t.Fatalf("encoding/json rejects what Decode accepted: %v", err)
		}
		if len(generic) != len(file.Nodes) {
			t.Fatalf("encoding/json sees %d nodes, Decode %d", len(generic), len(file.Nodes))
		}
		for _, n := range file.Nodes {
			g, ok := generic[n.TubID]
			if !ok {
				t.Fatalf("encoding/json has no node %q", n.TubID)
			}
			var nick *string
			if raw, ok := g["nickname"]; ok {
				if err := json.Unmarshal(raw, &nick); err != nil {
					t.Fatal(err)
				}
			}
			if nick != nil && *nick != n.Nickname {
				t.Fatalf("nickname: encoding/json %q, Decode %q", *nick, n.Nickname)
			}
		}
	})
}
