// Package scrape makes a capstats node a sidecar for a service that
// publishes its own statistics over HTTP: each Target is a node.Producer
// that fetches a URL on every snapshot (every gatherer poll) and reports
// what it found.
//
// The format is taken from the response, not configured:
//   - a body starting with '{' (or served as application/json) is
//     Tahoe-LAFS's /statistics?t=json, {"counters": {...}, "stats": {...}}:
//     names and namespaces are kept, ints stay ints and null stays null;
//   - application/openmetrics-text is OpenMetrics 1.0;
//   - anything else is the Prometheus text format 0.0.4.
//
// Prometheus and OpenMetrics samples map to dotted names so:
//   - a sample without labels keeps its name exactly (node_load1);
//   - each label adds ".LABEL_VALUE", in label name order, every byte
//     outside [A-Za-z0-9_-] replaced by '_':
//     node_cpu_seconds_total{cpu="0",mode="idle"} is
//     node_cpu_seconds_total.cpu_0.mode_idle;
//   - counters are counters (integers: a fractional total loses its
//     fraction); an OpenMetrics counter family foo is foo_total, as in the
//     text format; gauges and untyped samples are stats;
//   - a summary NAME gives the counter NAME_count, the stats NAME_sum and
//     NAME.mean, and one stat per quantile named as Tahoe-LAFS names its
//     latency percentiles: NAME.50_0_percentile, NAME.99_9_percentile;
//   - a histogram NAME gives the counter NAME_count, the stats NAME_sum and
//     NAME.mean, and a counter per bucket, NAME_bucket.le_0_5 (le="0.5"),
//     NAME_bucket.le__Inf; a gauge histogram gives the same names as stats;
//   - labels come before the derived suffix:
//     rpc_seconds{method="get"} quantile 0.5 is rpc_seconds.method_get.50_0_percentile.
//
// A prefix (Options.Prefix) goes in front of every name. Names the gatherer
// would refuse (longer than 256 bytes, control characters) and entries past
// Options.MaxEntries are left out and counted in node.scrape_dropped, and so
// are new counter names once a target has had MaxEntries distinct ones
// (the node keeps every counter it has seen, so label values that churn
// must not grow it without bound).
//
// A scraped counter is the service's total: the node's counter of that name
// follows it, and when the service restarts (its total goes down) the
// node's counter goes on from where it was, adding the new total, so munin's
// and Prometheus's rates stay right.
//
// A scraped name that is also one of the node's own stats wins: targets are
// registered after the node's built-in producers, and of two producers the
// later one's value is kept, so a Tahoe node's cpu_monitor.* and node.uptime
// replace the sidecar's own.
//
// A failed scrape (no answer in time, an HTTP status other than 200, a body
// over the size bound, a body that does not parse) is counted in the counter
// node.scrape_errors and leaves that target's stats out of the snapshot; it
// never fails the poll. The error is logged when it differs from the
// target's previous outcome, and recovery is logged once.
package scrape

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode"

	"capstats/node"
	"capstats/stats"
)

// Counter names the node reports about its scrapes.
const (
	ErrorsCounter  = "node.scrape_errors"
	DroppedCounter = "node.scrape_dropped"
)

// Defaults of Options.
const (
	DefaultTimeout    = 2 * time.Second
	DefaultMaxBytes   = 8 << 20
	DefaultMaxEntries = 5000
)

// Accept asks for the Prometheus text format first: every exporter built on
// client_golang serves it, and its parser is the fast one.
const Accept = "text/plain;version=0.0.4;q=1,application/openmetrics-text;version=1.0.0;q=0.5,application/json;q=0.4,*/*;q=0.1"

// Options configures a Target. The zero value is usable.
type Options struct {
	// Timeout bounds one scrape, from dialling to the last byte; 0 means
	// DefaultTimeout.
	Timeout time.Duration
	// MaxBytes bounds the body; a longer one is an error. 0 means
	// DefaultMaxBytes.
	MaxBytes int64
	// MaxEntries bounds the counters plus stats kept from one scrape (the
	// gatherer refuses a whole reply of more than 10,000 entries); 0 means
	// DefaultMaxEntries.
	MaxEntries int
	// Prefix goes in front of every name.
	Prefix string
	// Client does the requests; nil means a client of its own.
	Client *http.Client
	// Logger receives scrape failures; nil means slog.Default().
	Logger *slog.Logger
}

// Target is one URL read on every snapshot.
type Target struct {
	url    string
	opts   Options
	client *http.Client
	log    *slog.Logger

	mu       sync.Mutex
	p        *node.Provider
	last     map[string]int64 // the service's counter totals at the last scrape
	lastErr  string
	anyScrap bool
}

// New returns a Target for rawURL, which must be an http or https URL.
func New(rawURL string, opts Options) (*Target, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("scrape URL %q: %w", rawURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("scrape URL %q: want http://HOST[:PORT]/PATH or https://HOST[:PORT]/PATH", rawURL)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = DefaultMaxEntries
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c := opts.Client
	if c == nil {
		// No ResponseHeaderTimeout: the context of each scrape bounds it
		// all, and a second timer of the same length made a target that
		// hangs fail with either of two errors, logged at each change.
		c = &http.Client{Transport: &http.Transport{
			Proxy:              nil, // a sidecar talks to its neighbour, never through a proxy
			MaxIdleConns:       2,
			IdleConnTimeout:    90 * time.Second,
			DisableCompression: false,
		}}
	}
	return &Target{url: u.String(), opts: opts, client: c, log: opts.Logger.With("scrape", u.Redacted())}, nil
}

// Scrape fetches and parses the target once.
func (t *Target) Scrape(ctx context.Context) (Result, Format, error) {
	ctx, cancel := context.WithTimeout(ctx, t.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.url, nil)
	if err != nil {
		return Result{}, "", err
	}
	req.Header.Set("Accept", Accept)
	req.Header.Set("User-Agent", "capstats-node")
	resp, err := t.client.Do(req)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return Result{}, "", fmt.Errorf("no answer within %v", t.opts.Timeout)
		}
		return Result{}, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Result{}, "", fmt.Errorf("HTTP status %d", resp.StatusCode)
	}
	if resp.ContentLength > t.opts.MaxBytes {
		return Result{}, "", fmt.Errorf("body of %d bytes, limit is %d", resp.ContentLength, t.opts.MaxBytes)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, t.opts.MaxBytes+1))
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return Result{}, "", fmt.Errorf("body not read within %v", t.opts.Timeout)
		}
		return Result{}, "", fmt.Errorf("read body: %w", err)
	}
	if int64(len(body)) > t.opts.MaxBytes {
		return Result{}, "", fmt.Errorf("body over the limit of %d bytes", t.opts.MaxBytes)
	}
	return Parse(body, resp.Header.Get("Content-Type"), t.opts.Prefix, t.opts.MaxEntries)
}

// Register adds t to p as a producer. Register targets after the node's
// built-in producers, so that what the service reports wins.
func (t *Target) Register(p *node.Provider) error {
	t.mu.Lock()
	if t.p != nil {
		t.mu.Unlock()
		return errors.New("scrape: target registered twice")
	}
	t.p = p
	t.mu.Unlock()
	p.Counter(ErrorsCounter)
	p.Counter(DroppedCounter)
	return p.Register(node.ProducerFunc(t.stats))
}

// stats is the producer: one scrape, its counters passed on to the
// provider, its stats returned.
func (t *Target) stats() stats.Map {
	res, format, err := t.Scrape(context.Background())
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		t.p.Count(ErrorsCounter, 1)
		msg := printable(err.Error())
		if msg != t.lastErr {
			t.log.Warn("scrape failed; its stats are left out until it answers", "err", msg)
			t.lastErr = msg
		}
		return nil
	}
	if t.lastErr != "" || !t.anyScrap {
		t.log.Info("scrape answered", "format", string(format), "counters", len(res.Counters), "stats", len(res.Stats))
		t.lastErr = ""
		t.anyScrap = true
	}
	if res.Dropped > 0 {
		t.p.Count(DroppedCounter, int64(res.Dropped))
	}
	if t.last == nil {
		t.last = make(map[string]int64, len(res.Counters))
	}
	var dropped int64
	for name, v := range res.Counters {
		total := v.Int()
		prev, seen := t.last[name]
		if !seen && len(t.last) >= t.opts.MaxEntries {
			// A counter never goes away from the provider: a service whose
			// label values churn must not grow it without bound.
			dropped++
			continue
		}
		switch {
		case !seen:
			t.p.Counter(name).Add(total)
		case total >= prev:
			if total > prev {
				t.p.Count(name, total-prev)
			}
		default: // the service restarted
			t.p.Count(name, total)
		}
		t.last[name] = total
	}
	if dropped > 0 {
		t.p.Count(DroppedCounter, dropped)
	}
	return res.Stats
}

// printable keeps an error message from a hostile peer short and free of
// control characters before it reaches a log.
func printable(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	const max = 300
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "") + "..."
	}
	return s
}
