package scrape

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"slices"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"capstats/stats"
	"capstats/statsfile"
	"capstats/wire"
)

// Result is what one scrape found: counters (monotonic totals, as the
// service reports them) and stats (instantaneous values).
type Result struct {
	Counters stats.Map
	Stats    stats.Map
	// Dropped counts entries left out: names the gatherer would refuse
	// (empty, too long, control characters) and entries past the bound.
	Dropped int
}

// Format names what a body was read as.
type Format string

// The formats a body can be.
const (
	FormatTahoe       Format = "tahoe-json"
	FormatText        Format = "prometheus-text"
	FormatOpenMetrics Format = "openmetrics"
)

// Parse reads body, whose Content-Type header was contentType, as Tahoe's
// JSON, OpenMetrics or Prometheus text, whichever it is (see the package
// documentation), keeping at most maxEntries counters plus stats (0 means
// no bound) and putting prefix in front of every name.
func Parse(body []byte, contentType, prefix string, maxEntries int) (Result, Format, error) {
	b := &builder{res: Result{Counters: stats.Map{}, Stats: stats.Map{}}, prefix: prefix, max: maxEntries}
	mediatype, params, _ := mime.ParseMediaType(contentType)
	switch {
	case mediatype == "application/json" || firstByte(body) == '{':
		return b.res, FormatTahoe, b.tahoe(body)
	case mediatype == expfmt.OpenMetricsType:
		f := expfmt.FmtOpenMetrics_1_0_0
		if params["version"] == expfmt.OpenMetricsVersion_0_0_1 {
			f = expfmt.FmtOpenMetrics_0_0_1
		}
		return b.res, FormatOpenMetrics, b.prometheus(expfmt.NewDecoder(bytes.NewReader(body), f), true)
	default:
		return b.res, FormatText, b.prometheus(expfmt.NewDecoder(bytes.NewReader(body), expfmt.FmtText), false)
	}
}

func firstByte(b []byte) byte {
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

type builder struct {
	res    Result
	prefix string
	max    int
}

func (b *builder) add(m stats.Map, name string, v stats.Value) {
	name = b.prefix + name
	if wire.CheckName([]byte(name), wire.DefaultLimits.MaxNameLen) != nil ||
		(b.max > 0 && len(b.res.Counters)+len(b.res.Stats) >= b.max) {
		b.res.Dropped++
		return
	}
	m[name] = v
}

// tahoe reads Tahoe-LAFS's /statistics?t=json, {"counters": {...},
// "stats": {...}}, with the stats file's decoder: it keeps ints as ints and
// null as null, and reads Python's NaN and Infinity as null.
func (b *builder) tahoe(body []byte) error {
	const head = `{"scrape":{"stats":`
	f, err := statsfile.Decode(io.MultiReader(strings.NewReader(head), bytes.NewReader(body), strings.NewReader("}}")))
	if err != nil {
		return fmt.Errorf("tahoe JSON: %w", errors.Unwrap(err))
	}
	if len(f.Nodes) != 1 {
		return errors.New("tahoe JSON: not one object")
	}
	s := f.Nodes[0].Stats
	for name, v := range s.Counters.Sorted() {
		b.add(b.res.Counters, name, v)
	}
	for name, v := range s.Stats.Sorted() {
		b.add(b.res.Stats, name, v)
	}
	return nil
}

// prometheus reads metric families from d.
func (b *builder) prometheus(d expfmt.Decoder, openMetrics bool) error {
	var fams []*dto.MetricFamily
	for {
		mf := new(dto.MetricFamily)
		err := d.Decode(mf)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		fams = append(fams, mf)
	}
	// Families in name order, so that which entries a bound drops does not
	// depend on the parser's map order.
	slices.SortFunc(fams, func(a, c *dto.MetricFamily) int { return strings.Compare(a.GetName(), c.GetName()) })
	for _, mf := range fams {
		b.family(mf, openMetrics)
	}
	return nil
}

func (b *builder) family(mf *dto.MetricFamily, openMetrics bool) {
	name := mf.GetName()
	for _, m := range mf.GetMetric() {
		labels := labelSuffix(m.GetLabel())
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			n := name
			if openMetrics && !strings.HasSuffix(n, "_total") {
				n += "_total" // OpenMetrics names the family without it
			}
			b.counter(n+labels, m.GetCounter().GetValue())
		case dto.MetricType_GAUGE:
			b.add(b.res.Stats, name+labels, stats.Float(m.GetGauge().GetValue()))
		case dto.MetricType_UNTYPED:
			b.add(b.res.Stats, name+labels, stats.Float(m.GetUntyped().GetValue()))
		case dto.MetricType_SUMMARY:
			s := m.GetSummary()
			b.counter(name+"_count"+labels, float64(s.GetSampleCount()))
			b.add(b.res.Stats, name+"_sum"+labels, stats.Float(s.GetSampleSum()))
			b.add(b.res.Stats, name+labels+".mean", mean(s.GetSampleSum(), float64(s.GetSampleCount())))
			for _, q := range s.GetQuantile() {
				if suffix, ok := PercentileSuffix(q.GetQuantile()); ok {
					b.add(b.res.Stats, name+labels+"."+suffix, stats.Float(q.GetValue()))
				}
			}
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			h := m.GetHistogram()
			count := float64(h.GetSampleCount())
			if h.SampleCountFloat != nil {
				count = h.GetSampleCountFloat()
			}
			gauge := mf.GetType() == dto.MetricType_GAUGE_HISTOGRAM
			b.histCount(gauge, name+"_count"+labels, count)
			b.add(b.res.Stats, name+"_sum"+labels, stats.Float(h.GetSampleSum()))
			b.add(b.res.Stats, name+labels+".mean", mean(h.GetSampleSum(), count))
			for _, bk := range h.GetBucket() {
				c := float64(bk.GetCumulativeCount())
				if bk.CumulativeCountFloat != nil {
					c = bk.GetCumulativeCountFloat()
				}
				b.histCount(gauge, name+"_bucket"+labels+".le_"+clean(strconv.FormatFloat(bk.GetUpperBound(), 'g', -1, 64)), c)
			}
		}
	}
}

func (b *builder) histCount(gauge bool, name string, v float64) {
	if gauge {
		b.add(b.res.Stats, name, stats.Float(v))
		return
	}
	b.counter(name, v)
}

// counter keeps a counter as an int: capstats counters are integers, as
// Tahoe's were, so a fractional total loses its fraction.
func (b *builder) counter(name string, v float64) {
	if math.IsNaN(v) || v < 0 || v >= math.MaxInt64 {
		b.res.Dropped++
		return
	}
	b.add(b.res.Counters, name, stats.Int(int64(v)))
}

func mean(sum, count float64) stats.Value {
	if count == 0 {
		return stats.Null()
	}
	return stats.Float(sum / count)
}

// PercentileSuffix is the name Tahoe-LAFS gives the quantile q:
// 0.5 is "50_0_percentile", 0.999 "99_9_percentile", 0.01 "01_0_percentile".
// A quantile finer than 0.001 keeps all its digits ("99_99_percentile").
// It is false for a q outside [0, 1].
func PercentileSuffix(q float64) (string, bool) {
	if math.IsNaN(q) || q < 0 || q > 1 {
		return "", false
	}
	if permille := q * 1000; math.Abs(permille-math.Round(permille)) < 1e-6 && q < 1 {
		p := int(math.Round(permille))
		return fmt.Sprintf("%02d_%d_percentile", p/10, p%10), true
	}
	return clean(strconv.FormatFloat(q*100, 'f', -1, 64)) + "_percentile", true
}

// labelSuffix is ".name_value" for every label with a value, in label name
// order, each cleaned to [A-Za-z0-9_-].
func labelSuffix(labels []*dto.LabelPair) string {
	if len(labels) == 0 {
		return ""
	}
	sorted := slices.Clone(labels)
	slices.SortFunc(sorted, func(a, c *dto.LabelPair) int { return strings.Compare(a.GetName(), c.GetName()) })
	var sb strings.Builder
	for _, l := range sorted {
		if l.GetValue() == "" || l.GetName() == model.MetricNameLabel {
			continue // Prometheus treats an empty label as absent
		}
		sb.WriteByte('.')
		sb.WriteString(clean(l.GetName()))
		sb.WriteByte('_')
		sb.WriteString(clean(l.GetValue()))
	}
	return sb.String()
}

// clean replaces every byte outside [A-Za-z0-9_-] with '_', so that label
// values (paths, addresses, anything) make plain dotted names.
func clean(s string) string {
	ok := true
	for i := 0; i < len(s); i++ {
		if !nameByte(s[i]) {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		if !nameByte(c) {
			b[i] = '_'
		}
	}
	return string(b)
}

func nameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}
