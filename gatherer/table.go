package gatherer

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"capstats/stats"
	"capstats/statsfile"
)

// tableStats are the stats shown beside each node by WriteTable: the ones an
// operator looks at first.
var tableStats = []struct {
	header, name string
	format       func(stats.Value) string
}{
	{"LOAD", "load_monitor.avg_load", short},
	{"CPU-1M", "cpu_monitor.1min_avg", short},
	{"UPTIME", "node.uptime", duration},
	{"DISK-AVAIL", "storage_server.disk_avail", byteSize},
}

// short prints a value with at most four significant digits.
func short(v stats.Value) string {
	if v.Kind() == stats.KindInt {
		return strconv.FormatInt(v.Int(), 10)
	}
	return strconv.FormatFloat(v.Float(), 'g', 4, 64)
}

func duration(v stats.Value) string {
	return time.Duration(v.Float() * float64(time.Second)).Round(time.Second).String()
}

func byteSize(v stats.Value) string {
	f := v.Float()
	for _, unit := range []string{"B", "KiB", "MiB", "GiB", "TiB"} {
		if f < 1024 || unit == "TiB" {
			return strconv.FormatFloat(f, 'f', 1, 64) + unit
		}
		f /= 1024
	}
	return ""
}

// WriteTable prints one line per node of f: nickname, tub ID, up, how long
// a down node has been without an answer, age of the last sample, a few
// stats and the last error (for a down node: why it is down).
func WriteTable(w io.Writer, f *statsfile.File, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := []string{"NICKNAME", "TUBID", "UP", "DOWN-FOR", "AGE"}
	for _, s := range tableStats {
		head = append(head, s.header)
	}
	head = append(head, "LAST-ERROR")
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, n := range f.Nodes {
		up, downFor := "yes", "-"
		if !n.Up {
			up, downFor = "no", "never up"
			if n.Timestamp > 0 {
				downFor = Since(n.Timestamp, now)
			}
		}
		row := []string{orDash(printable(n.Nickname)), printable(n.TubID), up, downFor, Age(n.Timestamp, now)}
		for _, s := range tableStats {
			v, ok := n.Stats.Stats.Get(s.name)
			if !ok {
				v, ok = n.Stats.Counters.Get(s.name)
			}
			cell := "-"
			if ok && !v.IsNull() {
				cell = s.format(v)
			}
			row = append(row, cell)
		}
		row = append(row, orDash(printable(n.LastError)))
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

// printable escapes what a terminal would act on: control characters (a
// newline would forge a table row, ESC recolour or move the cursor), tabs
// (column breaks), other non-printable runes and invalid UTF-8, as \xNN,
// \uNNNN or \UNNNNNNNN. stats.json may come from anywhere, so every field
// of the table goes through it.
func printable(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || r == '\t' || !unicode.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case r != '\t' && unicode.IsPrint(r):
			b.WriteString(s[i : i+size])
		case r < 0x80:
			fmt.Fprintf(&b, "\\x%02x", r)
		case r <= 0xFFFF:
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			fmt.Fprintf(&b, "\\U%08x", r)
		}
		i += size
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Age says how long ago an epoch timestamp was, the way a person says it;
// "never" for a zero timestamp.
func Age(ts float64, now time.Time) string {
	if ts <= 0 {
		return "never"
	}
	return Since(ts, now) + " ago"
}

// Since says how long it is from an epoch timestamp to now: 42s, 5m02s,
// 3h07m, 4d.
func Since(ts float64, now time.Time) string {
	d := now.Sub(time.Unix(0, int64(ts*1e9)))
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
