// Package nodehttp serves one node's own stats over HTTP, for people and
// scrapers that go to nodes directly (`node --http ADDR`), as Tahoe-LAFS
// nodes did on their web port:
//
//   - GET /statistics?t=json (or no t): the snapshot, indented,
//     {"counters": {...}, "stats": {...}} with ints as ints and null as null.
//   - GET /statistics?t=openmetrics: the node alone in OpenMetrics 1.0, names
//     mangled as package openmetrics does for the gatherer (no tubid or
//     nickname labels unless configured: the scrape target says which
//     node it is).
//   - GET /metrics: the same, in OpenMetrics or the Prometheus text format
//     as the client's Accept header asks (Prometheus's default path).
package nodehttp

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"capstats/openmetrics"
	"capstats/stats"
)

// Options configure Handler. The zero value is usable.
type Options struct {
	// Labels go on every OpenMetrics sample (e.g. the node's nickname).
	// Their names must be valid label names other than "quantile".
	Labels []openmetrics.Label
	// Timeout bounds one snapshot. Default 10s.
	Timeout time.Duration
}

type handler struct {
	snapshot func(context.Context) stats.Snapshot
	labels   openmetrics.LabelSet
	timeout  time.Duration
	mux      *http.ServeMux
}

// Handler returns the node's HTTP handler; snapshot is called once per
// request, with the request's context bounded by Options.Timeout
// (node.Provider.Snapshot fits). It panics on an invalid label name in
// opts, since those come from code.
func Handler(snapshot func(context.Context) stats.Snapshot, o Options) http.Handler {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	h := &handler{snapshot: snapshot, labels: openmetrics.NewLabelSet(o.Labels...), timeout: o.Timeout, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /statistics", h.serveStatistics)
	h.mux.HandleFunc("GET /metrics", h.serveMetrics)
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	h.mux.ServeHTTP(w, r)
}

func (h *handler) snap(r *http.Request) stats.Snapshot {
	ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
	defer cancel()
	return h.snapshot(ctx)
}

func (h *handler) serveStatistics(w http.ResponseWriter, r *http.Request) {
	switch t := r.URL.Query().Get("t"); t {
	case "", "json":
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodHead {
			return
		}
		// Indented like Tahoe-LAFS's json.dumps(stats, indent=1); keys
		// sorted.
		b, err := json.MarshalIndent(h.snap(r), "", " ")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Write(append(b, '\n'))
	case "openmetrics":
		h.writeMetrics(w, r, openmetrics.OpenMetrics)
	default:
		http.Error(w, "unknown t="+t+": use t=json or t=openmetrics", http.StatusBadRequest)
	}
}

func (h *handler) serveMetrics(w http.ResponseWriter, r *http.Request) {
	h.writeMetrics(w, r, openmetrics.Negotiate(r.Header.Get("Accept")))
}

func (h *handler) writeMetrics(w http.ResponseWriter, r *http.Request, f openmetrics.Format) {
	w.Header().Set("Content-Type", f.ContentType())
	if r.Method == http.MethodHead {
		return
	}
	e := openmetrics.NewEncoder(w, f)
	openmetrics.WriteSnapshot(e, h.labels, h.snap(r))
	e.Close()
}
