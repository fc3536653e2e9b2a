package gatherer

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"capstats/stats"
	"capstats/statsfile"
)

func TestWriteTable(t *testing.T) {
	now := time.Unix(1_700_000_100, 0)
	f := &statsfile.File{Nodes: []statsfile.Node{
		{TubID: "aaaa", Nickname: "storage 1", Up: true, Timestamp: 1_700_000_090,
			Stats: stats.Snapshot{Stats: stats.SetOf(stats.Map{"load_monitor.avg_load": stats.Float(0.25), "node.uptime": stats.Int(3600), "storage_server.disk_avail": stats.Int(3 << 29)})}},
		{TubID: "bbbb", Nickname: "", Up: false, Timestamp: 0, LastError: "getStats timed out after 30s"},
		{TubID: "cccc", Nickname: "gone", Up: false, Timestamp: 1_700_000_100 - 302, LastError: "connection lost: EOF"},
	}}
	var b bytes.Buffer
	if err := WriteTable(&b, f, now); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("want header + 3 rows:\n%s", b.String())
	}
	if !strings.Contains(lines[0], "DOWN-FOR") {
		t.Errorf("header lacks DOWN-FOR: %s", lines[0])
	}
	for _, want := range []string{"storage 1", "aaaa", "yes", "10s ago", "0.25", "1h0m0s", "1.5GiB"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row 1 lacks %q: %s", want, lines[1])
		}
	}
	for _, want := range []string{"bbbb", "no", "never up", "never", "timed out"} {
		if !strings.Contains(lines[2], want) {
			t.Errorf("row 2 lacks %q: %s", want, lines[2])
		}
	}
	// A down node says why, and for how long it has not answered.
	for _, want := range []string{"gone", " no ", " 5m02s ", "5m02s ago", "connection lost: EOF"} {
		if !strings.Contains(lines[3], want) {
			t.Errorf("row 3 lacks %q: %s", want, lines[3])
		}
	}
}

func TestAge(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	cases := map[float64]string{0: "never", 999_999: "1s ago", 1_000_000 - 125: "2m05s ago", 1_000_000 - 7260: "2h01m ago", 1_000_000 - 3*86400: "3d ago", 1_000_010: "0s ago"}
	for ts, want := range cases {
		if got := Age(ts, now); got != want {
			t.Errorf("Age(%v) = %q, want %q", ts, got, want)
		}
	}
}
