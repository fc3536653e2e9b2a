package omtest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The names of the spec, checked here on their own rather than with the
// encoder's functions, so that a bug there does not hide here.
var (
	metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelName  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// Validate reads an OpenMetrics 1.0 text exposition and returns the first
// way it breaks the spec, for the subset this package writes (counter,
// gauge, summary, unknown; no exemplars): UTF-8, one "# EOF" at the very
// end, only HELP/TYPE/UNIT comments, metadata before samples, families
// never interleaved or repeated, sample names that fit their family's type,
// label syntax and escapes, no label set twice, quantile labels only on
// summaries and canonical in [0, 1], counter totals neither NaN nor
// negative. Tests use it on what openmetrics.Encoder writes; it is not a
// general parser, and no binary links it.
func Validate(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	sc.Split(scanLinesStrict)
	v := validator{seen: make(map[string]bool), series: make(map[string]bool)}
	line := 0
	eof := false
	for sc.Scan() {
		line++
		text := sc.Text()
		if eof {
			return fmt.Errorf("line %d: content after # EOF", line)
		}
		if !strings.HasSuffix(text, "\n") {
			return fmt.Errorf("line %d: last line does not end with a newline", line)
		}
		text = text[:len(text)-1]
		if !utf8.ValidString(text) {
			return fmt.Errorf("line %d: invalid UTF-8", line)
		}
		if text == "# EOF" {
			eof = true
			continue
		}
		var err error
		if strings.HasPrefix(text, "#") {
			err = v.meta(text)
		} else {
			err = v.sample(text)
		}
		if err != nil {
			return fmt.Errorf("line %d: %w: %q", line, err, text)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if !eof {
		return fmt.Errorf("no # EOF at the end")
	}
	return nil
}

func scanLinesStrict(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i+1], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

type validator struct {
	fam     string
	typ     string // "" until a TYPE line; "unknown" if none came
	help    bool
	samples bool
	seen    map[string]bool // family names already started
	series  map[string]bool // sample name + labels already written
}

func (v *validator) start(name string) error {
	if v.seen[name] {
		return fmt.Errorf("family %s appears twice (interleaved or repeated)", name)
	}
	v.seen[name] = true
	v.fam, v.typ, v.help, v.samples = name, "", false, false
	return nil
}

func (v *validator) meta(text string) error {
	kind := ""
	for _, k := range []string{"HELP", "TYPE", "UNIT"} {
		if strings.HasPrefix(text, "# "+k+" ") {
			kind = k
		}
	}
	if kind == "" {
		return fmt.Errorf("comment that is not HELP, TYPE, UNIT or EOF")
	}
	name, rest, ok := strings.Cut(text[len("# HELP "):], " ")
	if !ok {
		return fmt.Errorf("metadata line without a value")
	}
	if !metricName.MatchString(name) {
		return fmt.Errorf("invalid metric name %q", name)
	}
	if name != v.fam {
		if err := v.start(name); err != nil {
			return err
		}
	} else if v.samples {
		return fmt.Errorf("metadata after samples of %s", name)
	}
	switch kind {
	case "HELP":
		if v.help {
			return fmt.Errorf("second HELP for %s", name)
		}
		v.help = true
		return checkEscapes(rest, true)
	case "TYPE":
		if v.typ != "" {
			return fmt.Errorf("second TYPE for %s", name)
		}
		switch rest {
		case "counter", "gauge", "summary", "histogram", "gaugehistogram", "stateset", "info", "unknown":
		default:
			return fmt.Errorf("unknown type %q", rest)
		}
		if rest == "counter" && strings.HasSuffix(name, "_total") {
			return fmt.Errorf("counter family %s is named with its sample's _total suffix", name)
		}
		v.typ = rest
	}
	return nil
}

func checkEscapes(s string, quoteOK bool) error {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if i+1 >= len(s) {
				return fmt.Errorf("dangling backslash")
			}
			i++
			if c := s[i]; c != '\\' && c != 'n' && c != '"' {
				return fmt.Errorf("invalid escape \\%c", c)
			}
		case '"':
			if !quoteOK {
				return fmt.Errorf("unescaped quote")
			}
		case '\n':
			return fmt.Errorf("raw newline")
		}
	}
	return nil
}

func (v *validator) sample(text string) error {
	end := strings.IndexAny(text, "{ ")
	if end < 0 {
		return fmt.Errorf("sample without a value")
	}
	name := text[:end]
	if !metricName.MatchString(name) {
		return fmt.Errorf("invalid metric name %q", name)
	}
	rest := text[end:]
	labels := map[string]string{}
	if rest[0] == '{' {
		var err error
		if rest, err = parseLabels(rest, labels); err != nil {
			return err
		}
	}
	if !strings.HasPrefix(rest, " ") {
		return fmt.Errorf("no space before the value")
	}
	fields := strings.Split(rest[1:], " ")
	if len(fields) > 2 {
		return fmt.Errorf("trailing fields")
	}
	val, err := parseNumber(fields[0])
	if err != nil {
		return err
	}
	if len(fields) == 2 {
		if _, err := parseNumber(fields[1]); err != nil {
			return fmt.Errorf("timestamp: %w", err)
		}
	}

	// Which family does the sample belong to?
	suffix, ok := strings.CutPrefix(name, v.fam)
	if v.fam == "" || !ok || !allowedSuffix(v.typ, suffix) {
		// A sample of a new family without metadata: type unknown.
		if err := v.start(name); err != nil {
			return err
		}
		v.typ, suffix = "unknown", ""
	}
	if v.typ == "" {
		v.typ = "unknown"
		if !allowedSuffix("unknown", suffix) {
			return fmt.Errorf("sample %s does not belong to family %s", name, v.fam)
		}
	}
	v.samples = true

	q, hasQ := labels["quantile"]
	switch {
	case v.typ == "summary" && suffix == "":
		if !hasQ {
			return fmt.Errorf("summary sample without a quantile label")
		}
		f, err := strconv.ParseFloat(q, 64)
		if err != nil || f < 0 || f > 1 || math.IsNaN(f) {
			return fmt.Errorf("quantile %q is not a number in [0, 1]", q)
		}
		if q != canonicalQuantile(f) {
			return fmt.Errorf("quantile %q is not canonical (%s)", q, canonicalQuantile(f))
		}
	case hasQ && v.typ != "summary":
		return fmt.Errorf("quantile label on a %s", v.typ)
	}
	if v.typ == "counter" && suffix == "_total" && (math.IsNaN(val) || val < 0) {
		return fmt.Errorf("counter total %v", val)
	}
	key := name + "{" + canonicalLabels(labels) + "}"
	if v.series[key] {
		return fmt.Errorf("series %s written twice", key)
	}
	v.series[key] = true
	return nil
}

func allowedSuffix(typ, suffix string) bool {
	switch typ {
	case "counter":
		return suffix == "_total" || suffix == "_created"
	case "summary":
		return suffix == "" || suffix == "_count" || suffix == "_sum" || suffix == "_created"
	case "gauge", "unknown", "":
		return suffix == ""
	}
	return false
}

// canonicalQuantile is the form OpenMetrics asks for ("0.5", "0.999",
// "1.0"): shortest round-trip digits, with ".0" on whole numbers.
func canonicalQuantile(f float64) string {
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return s
}

func parseLabels(s string, into map[string]string) (string, error) {
	s = s[1:]
	if strings.HasPrefix(s, "}") {
		return s[1:], nil
	}
	for {
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			return "", fmt.Errorf("label without '='")
		}
		name := s[:eq]
		if !labelName.MatchString(name) {
			return "", fmt.Errorf("invalid label name %q", name)
		}
		if _, dup := into[name]; dup {
			return "", fmt.Errorf("label %s twice", name)
		}
		s = s[eq+1:]
		if !strings.HasPrefix(s, `"`) {
			return "", fmt.Errorf("label value not quoted")
		}
		var val strings.Builder
		i := 1
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' {
				if i+1 >= len(s) {
					return "", fmt.Errorf("dangling backslash")
				}
				i++
				switch s[i] {
				case '\\', '"':
					val.WriteByte(s[i])
				case 'n':
					val.WriteByte('\n')
				default:
					return "", fmt.Errorf("invalid escape \\%c in label value", s[i])
				}
				continue
			}
			val.WriteByte(s[i])
		}
		if i >= len(s) {
			return "", fmt.Errorf("unterminated label value")
		}
		into[name] = val.String()
		s = s[i+1:]
		switch {
		case strings.HasPrefix(s, "}"):
			return s[1:], nil
		case strings.HasPrefix(s, ","):
			s = s[1:]
		default:
			return "", fmt.Errorf("expected ',' or '}' after a label")
		}
	}
}

func canonicalLabels(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteString("=")
		b.WriteString(strconv.Quote(m[k]))
		b.WriteString(",")
	}
	return b.String()
}

func parseNumber(s string) (float64, error) {
	switch s {
	case "NaN":
		return math.NaN(), nil
	case "+Inf", "Inf", "+inf", "inf":
		return math.Inf(1), nil
	case "-Inf", "-inf":
		return math.Inf(-1), nil
	}
	if s == "" || strings.ContainsAny(s, "_xXpP") || strings.EqualFold(s, "nan") || strings.Contains(strings.ToLower(s), "inf") {
		return 0, fmt.Errorf("invalid number %q", s)
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid number %q", s)
	}
	return f, nil
}
