// Package openmetrics writes capstats stats for Prometheus and anything else
// that reads OpenMetrics 1.0 text (or the older Prometheus text format
// 0.0.4). The gatherer's /metrics (every node at once, labelled by tub ID and
// nickname) and a node's own /statistics?t=openmetrics share it.
//
// Stat names are mangled the way Tahoe-LAFS's OpenMetrics endpoint did
// (src/allmydata/web/status.py, render_OPENMETRICS): '.' becomes '_', and a
// "_NN_N_percentile" suffix becomes a quantile label, so
// storage_server.latencies.get.99_9_percentile is
// storage_server_latencies_get{quantile="0.999"}. Beyond what Tahoe did (it
// wrote bare samples, no # TYPE or # HELP, and prefixed every name with
// tahoe_counters_ or tahoe_stats_), see Mangle: counters are counters with
// the _total suffix OpenMetrics requires, stats are gauges, the percentile
// families are summaries, null is NaN, names are sanitised to the metric-name
// grammar, and every family has # TYPE and # HELP.
//
// The Encoder streams through a bufio.Writer and never builds a string per
// sample; it refuses a family whose name, or a sample name it implies,
// clashes with a family already written, so that one output never holds the
// same series twice whatever names nodes report.
package openmetrics

import (
	"bufio"
	"errors"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"capstats/stats"
)

// Content types of the two formats.
const (
	ContentType     = "application/openmetrics-text; version=1.0.0; charset=utf-8"
	TextContentType = "text/plain; version=0.0.4; charset=utf-8"
)

// Format is an exposition format.
type Format uint8

const (
	// OpenMetrics is OpenMetrics 1.0 text: a counter family foo has the
	// sample foo_total, and the output ends with "# EOF".
	OpenMetrics Format = iota
	// PrometheusText is the Prometheus text format 0.0.4, which is what
	// `promtool check metrics` and older scrapers read: the same families,
	// but a counter's # HELP and # TYPE name its sample (foo_total), and
	// there is no # EOF.
	PrometheusText
)

// ContentType returns the HTTP Content-Type of f.
func (f Format) ContentType() string {
	if f == PrometheusText {
		return TextContentType
	}
	return ContentType
}

func (f Format) String() string {
	if f == PrometheusText {
		return "prometheus-text"
	}
	return "openmetrics"
}

// Negotiate picks the format for an HTTP Accept header: OpenMetrics when the
// client accepts application/openmetrics-text at least as much as text/plain
// (Prometheus asks for it first), and the Prometheus text format otherwise,
// including for a missing header or */*, as Prometheus's own Go client does.
func Negotiate(accept string) Format {
	om, text := -1.0, -1.0
	for part := range strings.SplitSeq(accept, ",") {
		params := strings.Split(part, ";")
		mt := strings.ToLower(strings.TrimSpace(params[0]))
		q := 1.0
		for _, p := range params[1:] {
			k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
			if strings.EqualFold(strings.TrimSpace(k), "q") {
				if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					q = f
				}
			}
		}
		switch mt {
		case "application/openmetrics-text":
			om = max(om, q)
		case "text/plain", "text/*", "*/*":
			text = max(text, q)
		}
	}
	if om > 0 && om >= text {
		return OpenMetrics
	}
	return PrometheusText
}

// Type is a metric family's type.
type Type uint8

const (
	Gauge Type = iota
	Counter
	Summary
)

func (t Type) String() string {
	switch t {
	case Counter:
		return "counter"
	case Summary:
		return "summary"
	}
	return "gauge"
}

// suffixes are the sample-name suffixes a family of each type owns.
func (t Type) suffixes() []string {
	switch t {
	case Counter:
		return []string{"_total", "_created"}
	case Summary:
		return []string{"", "_count", "_sum", "_created"}
	}
	return []string{""}
}

// Label is one label of a sample.
type Label struct{ Name, Value string }

// LabelSet is a set of labels rendered once, escaped, for use on many
// samples (a node's tub ID and nickname on each of its forty samples).
type LabelSet struct{ b []byte }

// NewLabelSet renders labels in the order given. It panics if a label name
// is not a valid label name or is "quantile" (which Encoder.Quantile adds),
// since label names come from code, not from data. Values may be anything:
// they are escaped, and invalid UTF-8 is replaced.
func NewLabelSet(labels ...Label) LabelSet {
	var b []byte
	for i, l := range labels {
		if !ValidLabelName(l.Name) || l.Name == "quantile" {
			panic("openmetrics: invalid label name " + strconv.Quote(l.Name))
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, l.Name...)
		b = append(b, '=', '"')
		b = appendEscaped(b, l.Value, true)
		b = append(b, '"')
	}
	return LabelSet{b: b}
}

// ValidMetricName reports whether s matches [a-zA-Z_:][a-zA-Z0-9_:]*.
func ValidMetricName(s string) bool { return validName(s, true) }

// ValidLabelName reports whether s matches [a-zA-Z_][a-zA-Z0-9_]*.
func ValidLabelName(s string) bool { return validName(s, false) }

func validName(s string, colon bool) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' ||
			i > 0 && '0' <= c && c <= '9' || colon && c == ':'
		if !ok {
			return false
		}
	}
	return true
}

// appendEscaped escapes \ and newline, and " when quote is set (label
// values, and OpenMetrics help text); invalid UTF-8 becomes U+FFFD.
func appendEscaped(b []byte, s string, quote bool) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '\\':
				b = append(b, '\\', '\\')
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '"' && quote:
				b = append(b, '\\', '"')
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, "\uFFFD"...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return b
}

// ErrClosed is returned by writes after Close.
var ErrClosed = errors.New("openmetrics: encoder closed")

// Encoder writes one exposition. Call Family, then Sample or Quantile for
// each of its samples, then the next Family; Close ends the output. The
// first write error sticks: later calls do nothing and Close and Err return
// it. An Encoder is not safe for concurrent use.
type Encoder struct {
	w      *bufio.Writer
	f      Format
	err    error
	closed bool

	// current family; skip means the last Family call was refused.
	name string
	typ  Type
	skip bool

	used map[string]struct{} // sample names owned by families written
}

// NewEncoder returns an Encoder writing f to w through a 64 KiB buffer.
func NewEncoder(w io.Writer, f Format) *Encoder {
	return &Encoder{w: bufio.NewWriterSize(w, 64<<10), f: f, skip: true, used: make(map[string]struct{})}
}

// Format returns the encoder's format.
func (e *Encoder) Format() Format { return e.f }

// Err returns the first write error.
func (e *Encoder) Err() error { return e.err }

// Available reports whether a family called name of type t could still be
// written: its name is valid and neither it nor a sample name it owns
// (foo_total, foo_count, ...) is owned by a family already written.
func (e *Encoder) Available(name string, t Type) bool {
	if !ValidMetricName(name) {
		return false
	}
	for _, s := range t.suffixes() {
		if _, ok := e.used[name+s]; ok {
			return false
		}
	}
	// A family named like a sample another family could own (foo_total
	// beside a counter foo) is caught from the other side too.
	_, ok := e.used[name]
	return !ok
}

// Family starts a metric family, writing its # HELP and # TYPE lines. It
// returns false, writes nothing, and drops the samples that follow until the
// next Family, when the name is invalid or clashes with a family already
// written (see Available).
func (e *Encoder) Family(name string, t Type, help string) bool {
	if e.closed || e.err != nil || !e.Available(name, t) {
		e.skip = true
		return false
	}
	for _, s := range t.suffixes() {
		e.used[name+s] = struct{}{}
	}
	e.used[name] = struct{}{}
	e.name, e.typ, e.skip = name, t, false

	// In the Prometheus text format a counter's metadata names its sample.
	meta := name
	if t == Counter && e.f == PrometheusText {
		meta = name + "_total"
	}
	b := e.w.AvailableBuffer()
	b = append(b, "# HELP "...)
	b = append(b, meta...)
	b = append(b, ' ')
	b = appendEscaped(b, help, e.f == OpenMetrics)
	b = append(b, "\n# TYPE "...)
	b = append(b, meta...)
	b = append(b, ' ')
	b = append(b, t.String()...)
	b = append(b, '\n')
	e.write(b)
	return true
}

// Sample writes one sample of the current family: foo_total for a counter,
// foo otherwise. Null is written as NaN; a counter sample that is null or
// negative is left out, since an OpenMetrics counter's total is never NaN
// and never below zero. On a summary it does nothing: use Quantile.
func (e *Encoder) Sample(ls LabelSet, v stats.Value) {
	e.sample(ls, "", v)
}

// Quantile writes one quantile sample of the current summary family, with
// the label quantile="q" after the labels of ls. q should be canonical
// ("0.5", "0.99", "0.999"); Mangle gives it so. It does nothing on a
// family that is not a summary, or with q empty.
func (e *Encoder) Quantile(ls LabelSet, q string, v stats.Value) {
	e.sample(ls, q, v)
}

func (e *Encoder) sample(ls LabelSet, q string, v stats.Value) {
	if e.skip || e.err != nil || (e.typ == Summary) != (q != "") {
		return
	}
	if e.typ == Counter && (v.IsNull() || v.Float() < 0) {
		return
	}
	b := e.w.AvailableBuffer()
	b = append(b, e.name...)
	if e.typ == Counter {
		b = append(b, "_total"...)
	}
	if len(ls.b) > 0 || q != "" {
		b = append(b, '{')
		b = append(b, ls.b...)
		if q != "" {
			if len(ls.b) > 0 {
				b = append(b, ',')
			}
			b = append(b, `quantile="`...)
			b = appendEscaped(b, q, true)
			b = append(b, '"')
		}
		b = append(b, '}')
	}
	b = append(b, ' ')
	b = AppendValue(b, v)
	b = append(b, '\n')
	e.write(b)
}

// AppendValue appends v as an exposition number: an integer as is, a float
// in the shortest form that reads back exactly, null as NaN.
func AppendValue(b []byte, v stats.Value) []byte {
	switch v.Kind() {
	case stats.KindInt:
		return strconv.AppendInt(b, v.Int(), 10)
	case stats.KindFloat:
		return strconv.AppendFloat(b, v.Float(), 'g', -1, 64)
	}
	return append(b, "NaN"...)
}

func (e *Encoder) write(b []byte) {
	if e.err != nil {
		return
	}
	if _, err := e.w.Write(b); err != nil {
		e.err = err
	}
}

// Close writes "# EOF" (OpenMetrics only) and flushes. It returns the first
// error of the whole output.
func (e *Encoder) Close() error {
	if e.closed {
		if e.err == nil {
			return ErrClosed
		}
		return e.err
	}
	e.closed = true
	if e.f == OpenMetrics {
		e.write([]byte("# EOF\n"))
	}
	if e.err == nil {
		e.err = e.w.Flush()
	}
	return e.err
}
