// Package statsd is a StatsD listener for a capstats node: programs in any
// language send it the StatsD line protocol over UDP, and it reports what
// they sent through a node.Provider, as counters and stats. A Go service
// that embeds a node can run one with Listen; capstats-node runs one with
// --statsd ADDR.
//
// Each UDP datagram holds one or more lines separated by '\n':
//
//		NAME:VALUE|TYPE[|@RATE][|#TAGS]
//
//	  - c, a counter: VALUE/RATE is added to the counter NAME (a sample rate
//	    of 0.1 means each line stands for 10). Fractions are carried over to
//	    the next poll, never lost; a negative VALUE (decr) subtracts.
//	  - g, a gauge: the stat NAME is VALUE; a VALUE with a sign (+3, -2)
//	    adjusts the last value instead. A gauge written with integers stays an
//	    integer.
//	  - ms, h and d, a timer, histogram or distribution: the samples received
//	    since the previous snapshot (the poll window) give, as Tahoe-LAFS's
//	    storage latencies do, NAME.samplesize, NAME.mean (null with fewer than
//	    two samples) and NAME.01_0_percentile, 10_0, 50_0, 90_0, 95_0, 99_0 and
//	    NAME.99_9_percentile, each null until the window has enough samples
//	    for it (100, 10, 10, 10, 20, 100, 1000). Values keep the unit they were
//	    sent in (milliseconds for ms). A window without samples reports
//	    samplesize 0. Sample rates are ignored for timers.
//	  - s, a set: the stat NAME is the number of distinct VALUEs received in
//	    the poll window.
//
// Several values in one line (NAME:1:2:3|ms, as DogStatsD allows) are
// several samples. DogStatsD's tags (|#env:prod,role) are accepted and
// ignored: lines that differ only in tags add up to one name. Other
// DogStatsD fields (|c:CONTAINER, |T TIMESTAMP) are ignored too. DogStatsD
// events (_e{...}) and service checks (_sc|...) are not metrics and count
// as bad lines.
//
// Every line that does not parse (a missing ':' or '|', an unknown type, a
// value that is not a number, a name with a space or a control character,
// longer than MaxNameLen, or a name already used with another type) is
// counted in the counter node.statsd_bad_lines and otherwise ignored.
// Memory is bounded: at most MaxNames distinct names (lines for further
// names, and timer samples and set members past their bounds, are counted
// in node.statsd_dropped), and datagrams are read into a buffer of
// MaxPacket bytes.
//
// Each snapshot of the provider closes the poll window, so a node that is
// also read over HTTP (capstats-node --http) splits its windows between the
// gatherer's polls and the HTTP reads.
package statsd

import (
	"bytes"
	"errors"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"

	"capstats/node"
	"capstats/stats"
)

// Counter names the listener reports about itself.
const (
	BadLinesCounter = "node.statsd_bad_lines"
	DroppedCounter  = "node.statsd_dropped"
)

// Defaults of Options. DefaultMaxNames is well under the gatherer's 10,000
// entries per reply, because one timer name is nine entries.
const (
	DefaultMaxNames     = 1000
	DefaultMaxPacket    = 65536
	DefaultMaxSamples   = 1000
	DefaultMaxSetValues = 100000
	MaxNameLen          = 200
)

// Options configures a Server. The zero value is usable.
type Options struct {
	// MaxNames bounds the distinct names; 0 means DefaultMaxNames.
	MaxNames int
	// MaxPacket is the size of the datagram buffer; 0 means
	// DefaultMaxPacket, which holds any UDP datagram.
	MaxPacket int
	// MaxSamples bounds the samples a timer keeps per window for its
	// percentiles (a uniform sample of them when more arrive; samplesize
	// and mean still count them all); 0 means DefaultMaxSamples, the 1,000
	// Tahoe-LAFS keeps per latency category, enough for 99_9_percentile.
	MaxSamples int
	// MaxSetValues bounds the distinct values kept per window over all
	// sets; 0 means DefaultMaxSetValues.
	MaxSetValues int
	// Logger receives the listener's start and read errors; nil means
	// slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.MaxNames <= 0 {
		o.MaxNames = DefaultMaxNames
	}
	if o.MaxPacket <= 0 {
		o.MaxPacket = DefaultMaxPacket
	}
	if o.MaxSamples <= 0 {
		o.MaxSamples = DefaultMaxSamples
	}
	if o.MaxSetValues <= 0 {
		o.MaxSetValues = DefaultMaxSetValues
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

type kind uint8

const (
	kindCounter kind = iota + 1
	kindGauge
	kindTimer
	kindSet
)

type metric struct {
	kind kind

	// counter: what has not been passed to the provider yet.
	pending float64
	known   bool // the provider has the counter

	// gauge
	gauge    float64
	gaugeInt bool

	// timer, this window
	samples []float64
	seen    int64
	sum     float64

	// set, this window
	members map[string]struct{}
}

// Aggregator turns StatsD lines into a provider's counters and stats. It is
// what a Server feeds; Handle may also be called directly, with lines from
// any transport. Its methods are safe for concurrent use.
type Aggregator struct {
	p    *node.Provider
	opts Options
	rng  *rand.Rand

	mu         sync.Mutex
	names      map[string]*metric
	setMembers int
}

// NewAggregator returns an Aggregator reporting through p, and registers
// it as one of p's producers.
func NewAggregator(p *node.Provider, opts Options) (*Aggregator, error) {
	a := &Aggregator{p: p, opts: opts.withDefaults(), names: map[string]*metric{}, rng: rand.New(rand.NewPCG(1, 2))}
	p.Counter(BadLinesCounter)
	p.Counter(DroppedCounter)
	if err := p.Register(node.ProducerFunc(a.stats)); err != nil {
		return nil, err
	}
	return a, nil
}

// Handle takes one datagram: lines separated by '\n' (a trailing '\r' on a
// line is ignored).
func (a *Aggregator) Handle(packet []byte) {
	var bad, dropped int64
	a.mu.Lock()
	for len(packet) > 0 {
		line := packet
		if i := bytes.IndexByte(packet, '\n'); i >= 0 {
			line, packet = packet[:i], packet[i+1:]
		} else {
			packet = nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			continue
		}
		switch a.line(line) {
		case lineBad:
			bad++
		case lineDropped:
			dropped++
		}
	}
	a.mu.Unlock()
	if bad > 0 {
		a.p.Count(BadLinesCounter, bad)
	}
	if dropped > 0 {
		a.p.Count(DroppedCounter, dropped)
	}
}

type outcome uint8

const (
	lineOK outcome = iota
	lineBad
	lineDropped
)

// line handles one line; a.mu is held.
func (a *Aggregator) line(line []byte) outcome {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 || colon > MaxNameLen || !validName(line[:colon]) {
		return lineBad
	}
	name, rest := line[:colon], line[colon+1:]
	bar := bytes.IndexByte(rest, '|')
	if bar < 0 {
		return lineBad
	}
	values, rest := rest[:bar], rest[bar+1:]
	typ := rest
	var fields []byte
	if i := bytes.IndexByte(rest, '|'); i >= 0 {
		typ, fields = rest[:i], rest[i+1:]
	}
	var k kind
	switch string(typ) {
	case "c":
		k = kindCounter
	case "g":
		k = kindGauge
	case "ms", "h", "d":
		k = kindTimer
	case "s":
		k = kindSet
	default:
		return lineBad
	}
	rate := 1.0
	for len(fields) > 0 {
		f := fields
		if i := bytes.IndexByte(fields, '|'); i >= 0 {
			f, fields = fields[:i], fields[i+1:]
		} else {
			fields = nil
		}
		if len(f) > 1 && f[0] == '@' {
			r, err := strconv.ParseFloat(string(f[1:]), 64)
			if err != nil || !(r > 0 && r <= 1) {
				return lineBad
			}
			rate = r
		}
		// #tags, c:container, T timestamp: accepted, ignored.
	}
	if len(values) == 0 {
		return lineBad
	}
	// Parse every value before touching the metric, so that a bad line
	// changes nothing.
	var nums [8]float64
	var ints, signed [8]bool
	var n int
	if k != kindSet {
		for v := range bytes.SplitSeq(values, []byte{':'}) {
			f, isInt, ok := parseNumber(v)
			if !ok {
				return lineBad
			}
			if n == len(nums) {
				return lineBad // more values in one line than any client sends
			}
			nums[n], ints[n], signed[n] = f, isInt, v[0] == '+' || v[0] == '-'
			n++
		}
	}
	m := a.names[string(name)]
	if m == nil {
		if len(a.names) >= a.opts.MaxNames {
			return lineDropped
		}
		m = &metric{kind: k, gaugeInt: true}
		a.names[string(name)] = m
	} else if m.kind != k {
		return lineBad
	}
	switch k {
	case kindCounter:
		for _, v := range nums[:n] {
			m.pending += v / rate
		}
	case kindGauge:
		for i, v := range nums[:n] {
			if signed[i] {
				m.gauge += v
				m.gaugeInt = m.gaugeInt && ints[i]
			} else {
				m.gauge, m.gaugeInt = v, ints[i]
			}
		}
	case kindTimer:
		for _, v := range nums[:n] {
			m.seen++
			m.sum += v
			if len(m.samples) < a.opts.MaxSamples {
				m.samples = append(m.samples, v)
			} else if j := a.rng.Int64N(m.seen); j < int64(len(m.samples)) {
				m.samples[j] = v // reservoir sampling keeps a uniform sample
			}
		}
	case kindSet:
		if m.members == nil {
			m.members = map[string]struct{}{}
		}
		if _, ok := m.members[string(values)]; !ok {
			if a.setMembers >= a.opts.MaxSetValues {
				return lineDropped
			}
			m.members[string(values)] = struct{}{}
			a.setMembers++
		}
	}
	return lineOK
}

// validName accepts printable ASCII without spaces; ':' and '|' cannot
// occur (they end the name and the value).
func validName(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// parseNumber parses a StatsD value: digits quickly, anything else with
// strconv. NaN and infinities are refused.
func parseNumber(b []byte) (float64, bool, bool) {
	if len(b) == 0 || len(b) > 64 {
		return 0, false, false
	}
	digits := b
	neg := false
	if b[0] == '+' || b[0] == '-' {
		neg = b[0] == '-'
		digits = b[1:]
	}
	if len(digits) > 0 && len(digits) <= 15 {
		var v int64
		ok := true
		for _, c := range digits {
			if c < '0' || c > '9' {
				ok = false
				break
			}
			v = v*10 + int64(c-'0')
		}
		if ok {
			if neg {
				v = -v
			}
			return float64(v), true, true
		}
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false, false
	}
	return f, false, true
}

// percentiles are Tahoe-LAFS's: the quantile, and the fewest samples that
// give it a value.
var percentiles = []struct {
	q   float64
	min int
}{{0.01, 100}, {0.1, 10}, {0.5, 10}, {0.9, 10}, {0.95, 20}, {0.99, 100}, {0.999, 1000}}

var percentileNames = []string{".01_0_percentile", ".10_0_percentile", ".50_0_percentile",
	".90_0_percentile", ".95_0_percentile", ".99_0_percentile", ".99_9_percentile"}

// stats is the producer: it passes the counters on to the provider and
// reports gauges, timers and sets, closing the window.
func (a *Aggregator) stats() stats.Map {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(stats.Map, len(a.names))
	for name, m := range a.names {
		switch m.kind {
		case kindCounter:
			if !m.known {
				a.p.Counter(name)
				m.known = true
			}
			// Whole counts go on now, a fraction waits; a sum such as ten
			// times 1/0.1 that is off by rounding is whole.
			whole := math.Round(m.pending)
			if math.Abs(m.pending-whole) > 1e-9 {
				whole = math.Trunc(m.pending)
			}
			if whole != 0 {
				a.p.Count(name, int64(whole))
				m.pending -= whole
			}
		case kindGauge:
			if m.gaugeInt && math.Abs(m.gauge) < 1<<53 {
				out[name] = stats.Int(int64(m.gauge))
			} else {
				out[name] = stats.Float(m.gauge)
			}
		case kindTimer:
			a.timerStats(out, name, m)
			m.samples, m.seen, m.sum = m.samples[:0], 0, 0
		case kindSet:
			out[name] = stats.Int(int64(len(m.members)))
			a.setMembers -= len(m.members)
			m.members = nil
		}
	}
	return out
}

func (a *Aggregator) timerStats(out stats.Map, name string, m *metric) {
	out[name+".samplesize"] = stats.Int(m.seen)
	if m.seen > 1 {
		out[name+".mean"] = stats.Float(m.sum / float64(m.seen))
	} else {
		out[name+".mean"] = stats.Null()
	}
	slices.Sort(m.samples)
	n := len(m.samples)
	for i, p := range percentiles {
		if n >= p.min {
			out[name+percentileNames[i]] = stats.Float(m.samples[int(p.q*float64(n))])
		} else {
			out[name+percentileNames[i]] = stats.Null()
		}
	}
}

// Server is a StatsD listener on a UDP socket.
type Server struct {
	*Aggregator
	conn *net.UDPConn
	done chan struct{}
}

// Listen opens a UDP socket on addr (e.g. "127.0.0.1:8125"), reports what
// arrives through p, and reads until Close.
func Listen(addr string, p *node.Provider, opts Options) (*Server, error) {
	opts = opts.withDefaults()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, err
	}
	// A larger socket buffer rides out bursts while a snapshot holds the
	// lock; the kernel caps it at net.core.rmem_max.
	conn.SetReadBuffer(4 << 20)
	a, err := NewAggregator(p, opts)
	if err != nil {
		conn.Close()
		return nil, err
	}
	s := &Server{Aggregator: a, conn: conn, done: make(chan struct{})}
	go s.read()
	return s, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() net.Addr { return s.conn.LocalAddr() }

// Close stops the server and waits for its reader to finish.
func (s *Server) Close() error {
	err := s.conn.Close()
	<-s.done
	return err
}

func (s *Server) read() {
	defer close(s.done)
	buf := make([]byte, s.opts.MaxPacket)
	for {
		n, _, err := s.conn.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.opts.Logger.Warn("statsd: read", "err", err)
			continue
		}
		pkt := buf[:n]
		if n == len(buf) && pkt[n-1] != '\n' {
			// The datagram may have been cut: its last line is not trusted.
			if i := bytes.LastIndexByte(pkt, '\n'); i >= 0 {
				pkt = pkt[:i]
			} else {
				pkt = nil
			}
			s.p.Count(BadLinesCounter, 1)
		}
		s.Handle(pkt)
	}
}
