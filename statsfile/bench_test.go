package statsfile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	"capstats/stats"
)

var benchNames = []string{
	"storage_server.allocate", "storage_server.get", "storage_server.writev", "storage_server.readv",
	"storage_server.bytes_added", "storage_server.bytes_freed", "storage_server.allocated",
	"storage_server.consumed", "storage_server.disk_total", "storage_server.disk_used",
	"storage_server.disk_avail", "storage_server.disk_free_for_root", "storage_server.disk_free_for_nonroot",
	"storage_server.accepting_immutable_shares", "load_monitor.avg_load", "load_monitor.max_load",
	"cpu_monitor.1min_avg", "cpu_monitor.5min_avg", "cpu_monitor.15min_avg", "cpu_monitor.total",
	"node.uptime", "uploader.bytes_uploaded", "uploader.files_uploaded", "mutable.files_published",
	"mutable.files_retrieved", "chk_upload_helper.upload_requests",
}

// benchFile makes a file of n nodes with m counters and m stats each, a mix
// of ints, floats and nulls.
func benchFile(n, m int) *File {
	f := &File{Nodes: make([]Node, n)}
	for i := range f.Nodes {
		c, s := make(stats.Map, m), make(stats.Map, m)
		for j := 0; j < m; j++ {
			name := benchNames[j%len(benchNames)]
			if j >= len(benchNames) {
				name = fmt.Sprintf("%s.%d", name, j)
			}
			c[name] = stats.Int(int64(i*1000003 + j*7919))
			switch j % 4 {
			case 0:
				s[name] = stats.Null()
			case 1:
				s[name] = stats.Int(int64(i) << 30)
			default:
				s[name] = stats.Float(float64(i) / float64(j+3))
			}
		}
		f.Nodes[i] = Node{
			TubID:     fmt.Sprintf("%032d", i),
			Timestamp: 1700000000.123456 + float64(i), Nickname: fmt.Sprintf("storage-%d", i),
			Stats: stats.Snapshot{Counters: stats.SetOf(c), Stats: stats.SetOf(s)}, Up: true,
			LastPoll: 1700000000.2 + float64(i), PollSeconds: 0.000113,
		}
	}
	return f
}

// BenchmarkDecode1000: 1,000 nodes, 20 counters and 20 stats each, by
// Decode and by encoding/json into map[string]any for comparison.
func BenchmarkDecode1000(b *testing.B) {
	data := benchFile(1000, 20).AppendJSON(nil)
	b.Run("statsfile", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Decode(bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json-map", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			var m map[string]any
			if err := json.Unmarshal(data, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAppendJSON10000: one gatherer round of 10,000 nodes with 20
// counters and 20 stats each.
func BenchmarkAppendJSON10000(b *testing.B) {
	f := benchFile(10000, 20)
	buf := f.AppendJSON(nil)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = f.AppendJSON(buf[:0])
	}
}

func BenchmarkWriteFile10000(b *testing.B) {
	f := benchFile(10000, 20)
	path := filepath.Join(b.TempDir(), "stats.json")
	b.ReportAllocs()
	for b.Loop() {
		if err := WriteFile(path, f); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecode1000Filtered: the munin plugin's read, keeping one stat.
func BenchmarkDecode1000Filtered(b *testing.B) {
	data := benchFile(1000, 20).AppendJSON(nil)
	keep := func(category, name string) bool { return category == "stats" && name == "storage_server.allocated" }
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeFiltered(bytes.NewReader(data), keep); err != nil {
			b.Fatal(err)
		}
	}
}
