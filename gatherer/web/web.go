// Package web is the gatherer's HTTP side (`gatherer run --http ADDR`):
//
//   - GET /metrics: every node's counters and stats, with labels tubid and
//     nickname, plus per-node health and the gatherer's own figures, in
//     OpenMetrics 1.0 for clients that accept it (Prometheus asks for it)
//     and in the Prometheus text format 0.0.4 otherwise (curl, promtool);
//     gzipped when the client accepts gzip. See package openmetrics for
//     the names.
//   - GET /stats.json: the stats file as the gatherer holds it now.
//   - GET /: a status page for people: one row per node with its state,
//     age, last error, poll time and an inline SVG chart of the last hour
//     of a stat (?stat=NAME; default load_monitor.avg_load). No script,
//     no external assets.
//
// The charts come from a History fed by gatherer.Config.OnPoll.
package web

import (
	"compress/gzip"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"capstats/capnp/tub"
	"capstats/gatherer"
	"capstats/openmetrics"
	"capstats/stats"
	"capstats/statsfile"
)

// Source is what the pages read; *gatherer.Gatherer is one.
type Source interface {
	// File returns the current contents of the stats file.
	File() *statsfile.File
	// Metrics returns the gatherer's own figures.
	Metrics() gatherer.Metrics
	// PollErrors returns how many polls of a node have failed.
	PollErrors(tubID string) int64
	// Connected returns how many nodes are connected.
	Connected() int
}

// Options configure a Handler.
type Options struct {
	// History feeds the status page's charts; nil means no charts.
	History *History
	// Interval is the gatherer's poll interval, shown on the page and used
	// for StaleAfter's default. Default 60s.
	Interval time.Duration
	// StaleAfter: /metrics leaves out the counters and stats of a node
	// that is down or whose last good sample is older than this, so that
	// Prometheus sees them end instead of repeating a frozen value (the
	// health series say what happened). Default 3 × Interval.
	StaleAfter time.Duration
	// PageSize is how many nodes the status page lists at a time; the
	// others are a link away. Default 500.
	PageSize int
	// MaxSeries bounds the node series in /metrics. Past it, the nodes
	// with the most entries are cut to an equal share (their first entries
	// in name order), so nodes with a usual number keep all of theirs; the
	// entries left out are counted under reason "series_limit".
	// Default DefaultMaxSeries.
	MaxSeries int
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger gets request errors. Default: slog.Default().
	Logger *slog.Logger
	// Tub, when set, is the listener whose connection figures and
	// refusals /metrics shows (capstats_tub_*).
	Tub interface{ Metrics() tub.Metrics }
}

// DefaultMaxSeries is 10,000 nodes of 50 entries.
const DefaultMaxSeries = 500_000

// DefaultPageSize keeps the status page of a big grid quick to draw and
// to load: a page of every node of a big grid is megabytes of HTML
// (BENCHMARKS.md, Smaller findings).
const DefaultPageSize = 500

// Handler serves /metrics, /stats.json and the status page.
type Handler struct {
	src  Source
	opts Options
	mux  *http.ServeMux
}

// New returns the gatherer's HTTP handler.
func New(src Source, opts Options) *Handler {
	if opts.Interval <= 0 {
		opts.Interval = 60 * time.Second
	}
	if opts.StaleAfter <= 0 {
		opts.StaleAfter = 3 * opts.Interval
	}
	if opts.PageSize <= 0 {
		opts.PageSize = DefaultPageSize
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxSeries <= 0 {
		opts.MaxSeries = DefaultMaxSeries
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	h := &Handler{src: src, opts: opts, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /{$}", h.serveStatus)
	h.mux.HandleFunc("GET /metrics", h.serveMetrics)
	h.mux.HandleFunc("GET /stats.json", h.serveStatsJSON)
	return h
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	h.mux.ServeHTTP(w, r)
}

// compressed returns w, gzipped when the client accepts gzip, and a
// function that ends the body.
func compressed(w http.ResponseWriter, r *http.Request) (io.Writer, func() error) {
	w.Header().Add("Vary", "Accept-Encoding")
	if !acceptsGzip(r.Header.Get("Accept-Encoding")) {
		return w, func() error { return nil }
	}
	w.Header().Set("Content-Encoding", "gzip")
	gz, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
	return gz, gz.Close
}

func acceptsGzip(h string) bool {
	for part := range strings.SplitSeq(h, ",") {
		coding, params, _ := strings.Cut(part, ";")
		if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			continue
		}
		if k, v, ok := strings.Cut(params, "="); ok && strings.EqualFold(strings.TrimSpace(k), "q") {
			if q, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && q == 0 {
				return false
			}
		}
		return true
	}
	return false
}

func (h *Handler) serveStatsJSON(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if r.Method == http.MethodHead {
		return
	}
	b := h.src.File().AppendJSON(nil)
	out, end := compressed(w, r)
	if _, err := out.Write(b); err != nil {
		h.opts.Logger.Debug("writing /stats.json", "remote", r.RemoteAddr, "err", err)
		return
	}
	end()
}

// Format picks the exposition format of a /metrics request: ?format=
// openmetrics or ?format=prometheus (for a person comparing them), else
// the Accept header (openmetrics.Negotiate).
func Format(r *http.Request) openmetrics.Format {
	switch r.URL.Query().Get("format") {
	case "openmetrics":
		return openmetrics.OpenMetrics
	case "prometheus", "text":
		return openmetrics.PrometheusText
	}
	return openmetrics.Negotiate(r.Header.Get("Accept"))
}

func (h *Handler) serveMetrics(w http.ResponseWriter, r *http.Request) {
	f := Format(r)
	w.Header().Set("Content-Type", f.ContentType())
	w.Header().Set("Cache-Control", "no-store")
	if r.Method == http.MethodHead {
		return
	}
	out, end := compressed(w, r)
	e := openmetrics.NewEncoder(out, f)
	h.WriteMetrics(e)
	err := e.Close()
	if err == nil {
		err = end()
	}
	if err != nil {
		h.opts.Logger.Debug("writing /metrics", "remote", r.RemoteAddr, "err", err)
	}
}

// Metric families the gatherer writes about itself and about each node's
// health; node stats come after them and never take their names.
const (
	MetricNodesConnected  = "capstats_gatherer_nodes_connected"
	MetricNodes           = "capstats_gatherer_nodes"
	MetricRounds          = "capstats_gatherer_rounds"
	MetricRoundDuration   = "capstats_gatherer_round_duration_seconds"
	MetricRoundNodes      = "capstats_gatherer_round_nodes"
	MetricWrites          = "capstats_gatherer_writes"
	MetricWriteFailures   = "capstats_gatherer_write_failures"
	MetricWriteDuration   = "capstats_gatherer_write_duration_seconds"
	MetricStatsFileBytes  = "capstats_gatherer_stats_file_bytes"
	MetricUp              = "capstats_up"
	MetricLastPoll        = "capstats_last_poll_timestamp_seconds"
	MetricLastSample      = "capstats_last_sample_timestamp_seconds"
	MetricPollDuration    = "capstats_poll_duration_seconds"
	MetricPollErrors      = "capstats_poll_errors"
	MetricDropped         = "capstats_gatherer_exposition_dropped_entries"
	MetricTubConnections  = "capstats_tub_connections"
	MetricTubPending      = "capstats_tub_pending_handshakes"
	MetricTubMaxConns     = "capstats_tub_max_connections"
	MetricTubRefusals     = "capstats_tub_refusals"
	MetricTubBuffered     = "capstats_tub_buffered_bytes"
	MetricTubMaxBuffered  = "capstats_tub_max_buffered_bytes"
	MetricTubBufferWaits  = "capstats_tub_buffer_waits"
	MetricTubBufferWait   = "capstats_tub_buffer_wait_seconds"
	MetricNodesRefused    = "capstats_gatherer_nodes_refused"
	MetricNodesEvicted    = "capstats_gatherer_nodes_evicted"
	MetricNodesForgotten  = "capstats_gatherer_nodes_forgotten"
	labelTubID, labelNick = "tubid", "nickname"
)

// WriteMetrics writes the whole /metrics exposition to e (without closing
// it).
func (h *Handler) WriteMetrics(e *openmetrics.Encoder) {
	file := h.src.File()
	m := h.src.Metrics()
	now := h.opts.Now()
	none := openmetrics.LabelSet{}
	gauge := func(name, help string, v stats.Value) {
		if e.Family(name, openmetrics.Gauge, help) {
			e.Sample(none, v)
		}
	}
	counter := func(name, help string, v int64) {
		if e.Family(name, openmetrics.Counter, help) {
			e.Sample(none, stats.Int(v))
		}
	}

	gauge(MetricNodesConnected, "Nodes connected to the gatherer now.", stats.Int(int64(h.src.Connected())))
	gauge(MetricNodes, "Nodes the gatherer knows of, connected or not (entries in stats.json).", stats.Int(int64(len(file.Nodes))))
	counter(MetricRounds, "Poll rounds run since the gatherer started.", m.Rounds)
	rounds := m.Rounds > 0
	gauge(MetricRoundDuration, "How long the last poll round took, from its start to the stats file written.", floatIf(rounds, m.LastRoundSeconds))
	if e.Family(MetricRoundNodes, openmetrics.Gauge, "Nodes polled in the last round, by result (a poll still running at the write counts as failed).") {
		e.Sample(openmetrics.NewLabelSet(openmetrics.Label{Name: "result", Value: "ok"}), stats.Int(m.LastRoundOK))
		e.Sample(openmetrics.NewLabelSet(openmetrics.Label{Name: "result", Value: "failed"}), stats.Int(m.LastRoundFailed))
	}
	counter(MetricWrites, "Successful writes of the stats file since the gatherer started.", m.Writes)
	counter(MetricWriteFailures, "Failed writes of the stats file since the gatherer started (the previous file is kept).", m.WriteFailures)
	wrote := m.Writes+m.WriteFailures > 0
	gauge(MetricWriteDuration, "How long the last write of the stats file took.", floatIf(wrote, m.LastWriteSeconds))
	if b := m.LastWriteBytes; b > 0 { // only once the gatherer records it
		gauge(MetricStatsFileBytes, "Size of the stats file at the last write.", stats.Int(b))
	}

	if h.opts.Tub != nil {
		writeTubMetrics(e, h.opts.Tub.Metrics())
	}
	counter(MetricNodesRefused, "New node identities refused since the gatherer started: too many from one address lately, or --max-nodes reached with every node up.", m.NodesRefused)
	counter(MetricNodesEvicted, "Entries of nodes that were down dropped to make room for a new node (--max-nodes) since the gatherer started.", m.NodesEvicted)
	counter(MetricNodesForgotten, "Entries of nodes dropped after being down for --forget-after since the gatherer started.", m.NodesForgotten)

	labels := make([]openmetrics.LabelSet, len(file.Nodes))
	for i := range file.Nodes {
		labels[i] = openmetrics.NewLabelSet(
			openmetrics.Label{Name: labelTubID, Value: file.Nodes[i].TubID},
			openmetrics.Label{Name: labelNick, Value: file.Nodes[i].Nickname})
	}
	perNode := func(name string, t openmetrics.Type, help string, value func(n *statsfile.Node) (stats.Value, bool)) {
		if !e.Family(name, t, help) {
			return
		}
		for i := range file.Nodes {
			if v, ok := value(&file.Nodes[i]); ok {
				e.Sample(labels[i], v)
			}
		}
	}
	perNode(MetricUp, openmetrics.Gauge, "1 if the node is connected to the gatherer, 0 if not.", func(n *statsfile.Node) (stats.Value, bool) {
		if n.Up {
			return stats.Int(1), true
		}
		return stats.Int(0), true
	})
	perNode(MetricLastPoll, openmetrics.Gauge, "When the gatherer last polled the node (Unix time), successfully or not.", func(n *statsfile.Node) (stats.Value, bool) {
		return stats.Float(n.LastPoll), n.LastPoll > 0
	})
	perNode(MetricLastSample, openmetrics.Gauge, "When the node's last good sample arrived (Unix time): the timestamp in stats.json.", func(n *statsfile.Node) (stats.Value, bool) {
		return stats.Float(n.Timestamp), n.Timestamp > 0
	})
	perNode(MetricPollDuration, openmetrics.Gauge, "How long the last poll of the node took.", func(n *statsfile.Node) (stats.Value, bool) {
		return stats.Float(n.PollSeconds), n.LastPoll > 0
	})
	perNode(MetricPollErrors, openmetrics.Counter, "Polls of the node that failed (timeout, bad reply, lost connection) since the gatherer started.", func(n *statsfile.Node) (stats.Value, bool) {
		return stats.Int(h.src.PollErrors(n.TubID)), true
	})

	// Node stats: only of nodes that are up and fresh.
	nodes := make([]openmetrics.Node, 0, len(file.Nodes))
	for i := range file.Nodes {
		n := &file.Nodes[i]
		if !n.Up || n.Timestamp <= 0 || now.Sub(epochTime(n.Timestamp)) > h.opts.StaleAfter {
			continue
		}
		nodes = append(nodes, openmetrics.Node{Labels: labels[i], Stats: n.Stats})
	}
	limited := capSeries(nodes, h.opts.MaxSeries)
	d := openmetrics.WriteNodes(e, nodes)
	if e.Family(MetricDropped, openmetrics.Gauge, "Node entries left out of this exposition, by reason: clash (a family of another type, or of the gatherer, has the name), duplicate (two names of one node mangle to one series), invalid (a null or negative counter), series_limit (past the bound on series in one exposition, from the nodes with the most).") {
		for _, c := range []struct {
			reason string
			n      int
		}{{"clash", d.Clashes}, {"duplicate", d.Duplicates}, {"invalid", d.Invalid}, {"series_limit", limited}} {
			e.Sample(openmetrics.NewLabelSet(openmetrics.Label{Name: "reason", Value: c.reason}), stats.Int(int64(c.n)))
		}
	}
}

// writeTubMetrics writes the listener's figures: what it holds now and
// every connection it refused or dropped, by reason (tub.Reason*).
func writeTubMetrics(e *openmetrics.Encoder, m tub.Metrics) {
	for _, f := range []struct {
		name, help string
		typ        openmetrics.Type
		v          stats.Value
	}{
		{MetricTubConnections, "Connections to the gatherer's port that finished their TLS handshake, now.", openmetrics.Gauge, stats.Int(m.Connections)},
		{MetricTubPending, "Connections accepted that have not finished their TLS handshake, now.", openmetrics.Gauge, stats.Int(m.Pending)},
		{MetricTubMaxConns, "The bound on connections in force (lowered to keep file descriptors free).", openmetrics.Gauge, stats.Int(m.MaxConns)},
		{MetricTubBuffered, "Bytes of messages from nodes that the gatherer holds now, over all connections.", openmetrics.Gauge, stats.Int(m.BufferedBytes)},
		{MetricTubMaxBuffered, "The bound on those bytes: a connection is not read while its next message would pass it.", openmetrics.Gauge, stats.Int(m.MaxBufferedBytes)},
		{MetricTubBufferWaits, "Messages whose connection was not read until there was room for them under the bound on buffered bytes.", openmetrics.Counter, stats.Int(m.BufferWaits)},
		{MetricTubBufferWait, "Time those messages waited, in total.", openmetrics.Counter, stats.Float(m.BufferWaitTime.Seconds())},
	} {
		if e.Family(f.name, f.typ, f.help) {
			e.Sample(openmetrics.LabelSet{}, f.v)
		}
	}
	if e.Family(MetricTubRefusals, openmetrics.Counter, "Connections refused or closed by the gatherer's listener before or beyond what a node needs, by reason.") {
		for _, r := range m.Refusals() {
			e.Sample(openmetrics.NewLabelSet(openmetrics.Label{Name: "reason", Value: r.Reason}), stats.Int(r.Count))
		}
	}
}

func floatIf(ok bool, f float64) stats.Value {
	if !ok {
		return stats.Null()
	}
	return stats.Float(f)
}

func epochTime(ts float64) time.Time { return time.Unix(0, int64(ts*1e9)) }
