package openmetrics

import (
	"strings"
	"unicode/utf8"
)

// Namespace says which half of a snapshot a name comes from.
type Namespace uint8

const (
	Stats Namespace = iota
	Counters
)

// Series says where one dotted stat or counter name goes in an exposition.
type Series struct {
	Family   string // metric family name
	Type     Type
	Quantile string // canonical quantile label value; "" unless Type is Summary
}

// percentileSuffix is what Tahoe-LAFS's latency stats end with, after the
// dots became underscores: _01_0_percentile ... _99_9_percentile.
const percentileSuffix = "_percentile"

// reservedSuffixes are the endings OpenMetrics gives to the samples of
// counters, summaries, histograms and infos. The spec asks exposers to
// avoid family names that end so: a gauge storage_server_disk_total reads
// as a counter to a person and to `promtool check metrics`.
var reservedSuffixes = []string{"_total", "_created", "_count", "_sum", "_bucket", "_gcount", "_gsum", "_info"}

// Mangle maps a dotted name from a node's snapshot to its series:
//
//   - '.' becomes '_' (as Tahoe-LAFS did), and so does every other character
//     outside [a-zA-Z0-9_], one '_' per character (':' too: colons are for
//     recording rules); a name that would start with a digit gets a leading
//     '_'; an empty name is "_".
//   - A stat ending in _NN_N_percentile (after the step above) is the
//     quantile 0.NNN of a summary named by the rest, as Tahoe-LAFS's regexp
//     `_(\d\d)_(\d)_percentile` did, but anchored at the end of the name and
//     with the label value in canonical form: 99_9 is "0.999", 50_0 is
//     "0.5", 01_0 is "0.01" (Tahoe wrote "0.010"), 00_0 is "0.0".
//   - Other stats are gauges. A counter is a counter whose family drops
//     trailing _total, since its sample gets one: storage_server.bytes_total
//     and storage_server.bytes both write storage_server_bytes_total.
//   - A gauge or summary family that would end in a suffix OpenMetrics
//     reserves for other types' samples (_total, _count, _sum, _bucket,
//     _created, _info, _gcount, _gsum) gets "_value" appended:
//     storage_server.disk_total is storage_server_disk_total_value and
//     cpu_monitor.total is cpu_monitor_total_value. The # HELP line of every
//     family gives the original name.
func Mangle(ns Namespace, name string) Series {
	b := make([]byte, 0, len(name)+len("_value")+1)
	for _, r := range name {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9', r == '_':
			b = append(b, byte(r))
		default:
			b = append(b, '_')
		}
	}
	s := Series{Type: Gauge}
	if ns == Counters {
		s.Type = Counter
	} else if base, q, ok := cutPercentile(b); ok {
		b, s.Type, s.Quantile = base, Summary, q
	}
	switch {
	case len(b) == 0:
		b = append(b, '_')
	case '0' <= b[0] && b[0] <= '9':
		b = append(b, 0)
		copy(b[1:], b)
		b[0] = '_'
	}
	if s.Type == Counter {
		for len(b) > len("_total") && string(b[len(b)-len("_total"):]) == "_total" {
			b = b[:len(b)-len("_total")]
		}
		if string(b) == "_total" {
			b = b[:1] // its sample is __total
		}
	} else {
		for _, suf := range reservedSuffixes {
			if len(b) >= len(suf) && string(b[len(b)-len(suf):]) == suf {
				b = append(b, "_value"...)
				break
			}
		}
	}
	s.Family = string(b)
	return s
}

// cutPercentile splits "<base>_NN_N_percentile" into base and the canonical
// quantile 0.NNN; base must not be empty.
func cutPercentile(b []byte) (base []byte, q string, ok bool) {
	n := len(b) - len(percentileSuffix)
	if n < 6 || string(b[n:]) != percentileSuffix {
		return nil, "", false
	}
	d := b[n-5 : n] // "_NN_N"
	if d[0] != '_' || !isDigit(d[1]) || !isDigit(d[2]) || d[3] != '_' || !isDigit(d[4]) {
		return nil, "", false
	}
	digits := strings.TrimRight(string([]byte{d[1], d[2], d[4]}), "0")
	if digits == "" {
		digits = "0"
	}
	return b[:n-5], "0." + digits, true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// Help is the # HELP text of the family a name goes to: the original name,
// so that a reader can find the stat the family came from.
func Help(ns Namespace, name string, s Series) string {
	switch {
	case s.Type == Summary:
		// The last 15 characters are "NN_N_percentile", or what mangled to it.
		prefix := name
		for range len("NN_N_percentile") {
			_, size := utf8.DecodeLastRuneInString(prefix)
			prefix = prefix[:len(prefix)-size]
		}
		return "Node stats " + prefix + "NN_N_percentile, as quantiles."
	case ns == Counters:
		return "Node counter " + name + "."
	}
	return "Node stat " + name + "."
}
