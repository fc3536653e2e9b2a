package web

import (
	"fmt"
	"html/template"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"capstats/gatherer"
	"capstats/stats"
	"capstats/statsfile"
)

// Chart size in CSS pixels.
const chartW, chartH = 240, 36

// maxStatNames bounds the stat names offered in the page's menu.
const maxStatNames = 2000

type page struct {
	Title    string
	Now      string
	Interval string
	Refresh  int
	Window   string
	Total    int
	Up       int
	Down     int
	DownList []downRef
	OnlyDown bool
	Pager    *pager // nil when every node fits on one page
	Stat     string
	Stats    []string
	Note     string
	Rows     []row
}

// downRef links to a node that is down, on whichever page lists it; Href
// is empty for the "and N more" entry.
type downRef struct{ Href, Name string }

// pager says which nodes a page lists and links to its neighbours.
type pager struct {
	Page, Pages     int
	First, Last, Of int
	Prev, Next      string // hrefs; empty at either end
}

type row struct {
	Anchor    string
	Nickname  string
	TubID     string
	Short     string
	State     string // "up" or "down"
	Seen      string
	SeenAt    string
	PollTime  string
	PolledAt  string
	Value     string
	LastError string
	Chart     *chart
}

type chart struct {
	W, H     int
	Lines    []string // polyline points
	Dot      *dot     // the last point
	Min, Max string
	Label    string
}

type dot struct{ X, Y string }

var pageTemplate = template.Must(template.New("status").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{{.Refresh}}">
<title>{{.Title}}</title>
<style>
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.2em 1.5em; color: #1f2328; background: #fff; }
h1 { font-size: 1.35em; margin: 0 0 .2em; }
p { margin: .3em 0; }
a { color: #0969da; }
.muted { color: #59636e; }
.pill { display: inline-block; min-width: 3.2em; text-align: center; padding: .05em .6em; border-radius: 1em; font-weight: 600; color: #fff; }
.pill.up { background: #1a7f37; }
.pill.down { background: #cf222e; }
.pill.none { background: #818b98; }
.summary .pill { min-width: 0; }
form { margin: .8em 0; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3em .6em; border-bottom: 1px solid #d1d9e0; vertical-align: middle; }
th { background: #f6f8fa; font-weight: 600; white-space: nowrap; }
tr.down td { background: #ffebe9; }
td.nick { font-weight: 600; }
td.tubid { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .9em; color: #59636e; }
td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
td.err { color: #cf222e; max-width: 30em; overflow-wrap: anywhere; font-size: .92em; }
.chart { display: flex; align-items: stretch; gap: .4em; }
.chart svg { display: block; background: #f6f8fa; border-radius: 3px; }
.chart .line { fill: none; stroke: #0969da; stroke-width: 1.5; stroke-linejoin: round; }
.range { display: flex; flex-direction: column; justify-content: space-between; font-size: .75em; color: #59636e; font-variant-numeric: tabular-nums; }
</style>
</head>
<body>
<h1>capstats gatherer</h1>
<p class="summary">{{.Total}} node{{if ne .Total 1}}s{{end}}: <span class="pill up">{{.Up}} up</span> <span class="pill {{if .Down}}down{{else}}none{{end}}">{{.Down}} down</span> <span class="muted">· polled every {{.Interval}} · as of {{.Now}} · <a href="/metrics">/metrics</a> · <a href="/stats.json">/stats.json</a></span></p>
{{if .DownList}}<p>Down: {{range $i, $n := .DownList}}{{if $i}}, {{end}}{{if $n.Href}}<a href="{{$n.Href}}">{{$n.Name}}</a>{{else}}{{$n.Name}}{{end}}{{end}}</p>{{end}}
<form method="get" action="/">
<label>Chart of the last {{.Window}}: <select name="stat">{{range .Stats}}<option{{if eq . $.Stat}} selected{{end}}>{{.}}</option>{{end}}</select></label>
<label><input type="checkbox" name="only" value="down"{{if .OnlyDown}} checked{{end}}> only nodes that are down</label>
<button type="submit">Show</button>
{{with .Note}}<span class="muted">{{.}}</span>{{end}}
</form>
{{with .Pager}}<p class="pager">Nodes {{.First}}–{{.Last}} of {{.Of}} · {{if .Prev}}<a href="{{.Prev}}" rel="prev">‹ previous</a> · {{end}}page {{.Page}} of {{.Pages}}{{if .Next}} · <a href="{{.Next}}" rel="next">next ›</a>{{end}}</p>{{end}}
<table>
<thead><tr><th>Nickname</th><th>Tub ID</th><th>State</th><th>Last sample</th><th>Poll</th><th>{{.Stat}}</th><th>Last {{.Window}}</th><th>Last error</th></tr></thead>
<tbody>
{{range .Rows}}<tr id="{{.Anchor}}" class="node {{.State}}" data-tubid="{{.TubID}}" data-state="{{.State}}">
<td class="nick">{{if .Nickname}}{{.Nickname}}{{else}}<span class="muted">(no nickname)</span>{{end}}</td>
<td class="tubid" title="{{.TubID}}">{{.Short}}</td>
<td class="state"><span class="pill {{.State}}">{{.State}}</span></td>
<td class="num" title="{{.SeenAt}}">{{.Seen}}</td>
<td class="num" title="last poll {{.PolledAt}}">{{.PollTime}}</td>
<td class="num">{{.Value}}</td>
<td>{{with .Chart}}<div class="chart"><svg width="{{.W}}" height="{{.H}}" viewBox="0 0 {{.W}} {{.H}}" role="img" aria-label="{{.Label}}"><title>{{.Label}}</title>{{range .Lines}}<polyline class="line" points="{{.}}"/>{{end}}{{with .Dot}}<circle cx="{{.X}}" cy="{{.Y}}" r="2.5" fill="#0969da"/>{{end}}</svg><div class="range"><span>{{.Max}}</span><span>{{.Min}}</span></div></div>{{else}}<span class="muted">no data</span>{{end}}</td>
<td class="err">{{.LastError}}</td>
</tr>
{{else}}<tr><td colspan="8" class="muted">{{if .OnlyDown}}No node is down.{{else}}No node has connected yet.{{end}}</td></tr>
{{end}}</tbody>
</table>
</body>
</html>
`))

// contentSecurityPolicy allows nothing but the page's own inline style: no
// script, no fetch of anything.
const contentSecurityPolicy = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

func (h *Handler) serveStatus(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", contentSecurityPolicy)
	if r.Method == http.MethodHead {
		return
	}
	q := r.URL.Query()
	pageNum, _ := strconv.Atoi(q.Get("page")) // anything but a number is the first page
	p := h.buildPage(q.Get("stat"), q.Get("only") == "down", pageNum)
	out, end := compressed(w, r)
	if err := pageTemplate.Execute(out, p); err != nil {
		h.opts.Logger.Debug("writing the status page", "remote", r.RemoteAddr, "err", err)
		return
	}
	end()
}

// buildPage lays out page pageNum (from 1; out of range means the nearest
// page) of the nodes listed: all of them, or those down if onlyDown.
func (h *Handler) buildPage(stat string, onlyDown bool, pageNum int) *page {
	now := h.opts.Now()
	file := h.src.File()
	if stat == "" {
		stat = DefaultStat
	}
	p := &page{
		Now:      now.Format("2006-01-02 15:04:05 MST"),
		Interval: h.opts.Interval.String(),
		Refresh:  int(min(max(h.opts.Interval, 10*time.Second), 5*time.Minute) / time.Second),
		Window:   "hour",
		Total:    len(file.Nodes),
		OnlyDown: onlyDown,
		Stat:     stat,
		Stats:    statNames(file),
	}
	var since time.Time
	hist := h.opts.History
	switch {
	case hist == nil:
		p.Note = "No history is kept: charts are off."
	case slices.Contains(p.Stats, stat) || slices.Contains(hist.Tracked(), stat):
		since = hist.Track(stat)
		p.Window = windowText(hist.Window())
		if now.Sub(since) < hist.Window() {
			p.Note = "Charted since " + since.Format("15:04:05") + "."
		}
	default:
		p.Note = "No node reports " + strconv.Quote(stat) + "."
	}
	if !slices.Contains(p.Stats, stat) {
		p.Stats = append([]string{stat}, p.Stats...)
	}

	listed := len(file.Nodes)
	if onlyDown {
		listed = 0
		for i := range file.Nodes {
			if !file.Nodes[i].Up {
				listed++
			}
		}
	}
	size := h.opts.PageSize
	pages := max(1, (listed+size-1)/size)
	pageNum = min(max(pageNum, 1), pages)
	href := func(page int, anchor string) string {
		v := url.Values{}
		if page > 1 {
			v.Set("page", strconv.Itoa(page))
		}
		if stat != DefaultStat {
			v.Set("stat", stat)
		}
		if onlyDown {
			v.Set("only", "down")
		}
		u := "/"
		if len(v) > 0 {
			u += "?" + v.Encode()
		}
		if anchor != "" {
			u += "#" + anchor
		}
		return u
	}
	if pages > 1 {
		p.Pager = &pager{Page: pageNum, Pages: pages, First: (pageNum-1)*size + 1, Last: min(pageNum*size, listed), Of: listed}
		if pageNum > 1 {
			p.Pager.Prev = href(pageNum-1, "")
		}
		if pageNum < pages {
			p.Pager.Next = href(pageNum+1, "")
		}
	}

	index := 0 // among the nodes listed
	for i := range file.Nodes {
		n := &file.Nodes[i]
		name := n.Nickname
		if name == "" {
			name = short(n.TubID)
		}
		anchor := "node-" + n.TubID
		listedHere := !onlyDown || !n.Up
		onPage := listedHere && index/size+1 == pageNum
		if n.Up {
			p.Up++
		} else {
			p.Down++
			link := "#" + anchor
			if !onPage {
				link = href(index/size+1, anchor)
			}
			p.DownList = append(p.DownList, downRef{Href: link, Name: name})
		}
		if listedHere {
			index++
		}
		if !onPage {
			continue
		}
		rw := row{
			Anchor:    anchor,
			Nickname:  n.Nickname,
			TubID:     n.TubID,
			Short:     short(n.TubID),
			State:     "down",
			Seen:      gatherer.Age(n.Timestamp, now),
			SeenAt:    stamp(n.Timestamp),
			PollTime:  "–",
			PolledAt:  gatherer.Age(n.LastPoll, now),
			Value:     "–",
			LastError: n.LastError,
		}
		if n.Up {
			rw.State = "up"
		}
		if n.LastPoll > 0 {
			rw.PollTime = seconds(n.PollSeconds)
		}
		if v, ok := n.Stats.Stats.Get(stat); ok {
			rw.Value = display(v)
		}
		if hist != nil {
			rw.Chart = drawChart(hist.Series(n.TubID, stat, now), now, hist.Window(), hist.Spacing(), stat)
		}
		p.Rows = append(p.Rows, rw)
	}
	if len(p.DownList) > 50 {
		p.DownList = append(p.DownList[:50], downRef{Name: fmt.Sprintf("and %d more", len(p.DownList)-50)})
	}
	p.Title = fmt.Sprintf("capstats: %d up, %d down", p.Up, p.Down)
	return p
}

// statNames returns the stat names nodes report, sorted; at most
// maxStatNames.
func statNames(f *statsfile.File) []string {
	seen := make(map[string]struct{})
	for i := range f.Nodes {
		for k := range f.Nodes[i].Stats.Stats.All() {
			if len(seen) >= maxStatNames {
				break
			}
			seen[k] = struct{}{}
		}
	}
	names := make([]string, 0, len(seen))
	for k := range seen {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

func short(tubID string) string {
	if len(tubID) > 8 {
		return tubID[:8]
	}
	return tubID
}

func stamp(ts float64) string {
	if ts <= 0 {
		return "never"
	}
	return epochTime(ts).UTC().Format("2006-01-02 15:04:05 UTC")
}

// seconds formats a poll time the way a person reads it.
func seconds(s float64) string {
	switch {
	case s < 0.001:
		return strconv.FormatFloat(s*1e6, 'f', 0, 64) + " µs"
	case s < 1:
		return strconv.FormatFloat(s*1e3, 'f', 1, 64) + " ms"
	}
	return strconv.FormatFloat(s, 'f', 2, 64) + " s"
}

// display formats a value for the table: ints whole, floats to 4
// significant digits.
func display(v stats.Value) string {
	switch v.Kind() {
	case stats.KindInt:
		return strconv.FormatInt(v.Int(), 10)
	case stats.KindFloat:
		return strconv.FormatFloat(v.Float(), 'g', 4, 64)
	}
	return "null"
}

// drawChart lays out a sparkline of pts over the window ending at now: one
// polyline per run of points without a gap (a missing value, or more than
// 2.5 spacings between polls: the node was down), scaled to the points'
// own range.
func drawChart(pts []Point, now time.Time, window, spacing time.Duration, stat string) *chart {
	lo, hi := math.Inf(1), math.Inf(-1)
	n := 0
	for _, p := range pts {
		if !math.IsNaN(p.V) {
			lo, hi = min(lo, p.V), max(hi, p.V)
			n++
		}
	}
	if n == 0 {
		return nil
	}
	const pad = 3.0
	x := func(t time.Time) float64 {
		return pad + (chartW-2*pad)*(1-now.Sub(t).Seconds()/window.Seconds())
	}
	y := func(v float64) float64 {
		if hi == lo {
			return chartH / 2
		}
		return pad + (chartH-2*pad)*(hi-v)/(hi-lo)
	}
	c := &chart{W: chartW, H: chartH, Min: fmtNum(lo), Max: fmtNum(hi)}
	var line []string
	flush := func() {
		if len(line) == 1 { // a lone point: draw a short tick so it shows
			xy := strings.Split(line[0], ",")
			fx, _ := strconv.ParseFloat(xy[0], 64)
			line = append(line, strconv.FormatFloat(fx+1.5, 'f', 1, 64)+","+xy[1])
		}
		if len(line) > 0 {
			c.Lines = append(c.Lines, strings.Join(line, " "))
		}
		line = line[:0]
	}
	var prev time.Time
	last := math.NaN()
	for _, p := range pts {
		if math.IsNaN(p.V) || (!prev.IsZero() && p.T.Sub(prev) > spacing*5/2) {
			flush()
		}
		prev = p.T
		if math.IsNaN(p.V) {
			continue
		}
		px, py := strconv.FormatFloat(x(p.T), 'f', 1, 64), strconv.FormatFloat(y(p.V), 'f', 1, 64)
		line = append(line, px+","+py)
		c.Dot = &dot{X: px, Y: py}
		last = p.V
	}
	flush()
	plural := "s"
	if n == 1 {
		plural = ""
	}
	c.Label = fmt.Sprintf("%s over the last %s: latest %s, min %s, max %s, %d sample%s", stat, windowText(window), fmtNum(last), c.Min, c.Max, n, plural)
	return c
}

// windowText says a chart's window as the page's headings do: "hour",
// "2 hours", "20 minutes", "45s".
func windowText(w time.Duration) string {
	switch {
	case w == time.Hour:
		return "hour"
	case w%time.Hour == 0:
		return strconv.Itoa(int(w/time.Hour)) + " hours"
	case w%time.Minute == 0:
		return strconv.Itoa(int(w/time.Minute)) + " minutes"
	}
	return w.String()
}

func fmtNum(f float64) string {
	if math.IsNaN(f) {
		return "–"
	}
	return strconv.FormatFloat(f, 'g', 4, 64)
}
