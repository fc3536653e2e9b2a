package main

import (
	"fmt"
	"log/slog"
	"time"

	"capstats/hoststats"
	"capstats/node"
	"capstats/scrape"
	"capstats/statsd"
)

// Sidecar is the part of the command line that feeds the node from the
// service beside it and from the host.
type Sidecar struct {
	Scrape        []string      `help:"Read this URL on every poll and report what it serves: Tahoe-LAFS's /statistics?t=json, Prometheus text or OpenMetrics (repeatable)." placeholder:"URL" sep:"none"`
	ScrapePrefix  string        `help:"Put this in front of every scraped name." name:"scrape-prefix" placeholder:"STR"`
	ScrapeTimeout time.Duration `help:"Longest wait for one scrape." name:"scrape-timeout" default:"2s"`
	Statsd        string        `help:"Listen for StatsD lines on this UDP address, e.g. 127.0.0.1:8125 (off unless given)." placeholder:"ADDR"`
	NoHost        bool          `help:"Do not report the host's load, memory, CPU and uptime (host.*)." name:"no-host"`
}

// ownLoadMonitor reports whether register runs the load monitor, so that
// the Node must not run a second one.
func (s *Sidecar) ownLoadMonitor() bool { return len(s.Scrape) > 0 }

// producerTimeout leaves a scrape the time to fail by itself, so that its
// failure is counted as a scrape error rather than as a late producer.
func (s *Sidecar) producerTimeout() time.Duration {
	return max(node.DefaultProducerTimeout, s.ScrapeTimeout+time.Second)
}

// register adds the host producer, the StatsD listener and the scrape
// targets to p, in that order and after the node's own producers: of two
// producers reporting a name the later wins, so what the service reports
// replaces the sidecar's own figures.
func (s *Sidecar) register(p *node.Provider, log *slog.Logger) (stop func(), err error) {
	stop = func() {}
	if s.ScrapeTimeout <= 0 {
		return stop, fmt.Errorf("--scrape-timeout must be positive")
	}
	var targets []*scrape.Target
	for _, u := range s.Scrape {
		t, err := scrape.New(u, scrape.Options{Timeout: s.ScrapeTimeout, Prefix: s.ScrapePrefix, Logger: log})
		if err != nil {
			return stop, fmt.Errorf("--scrape: %w", err)
		}
		targets = append(targets, t)
	}
	if len(targets) > 0 {
		// A scraped service's load_monitor.* must win over the node's own,
		// so the node's monitor is registered here, before the targets,
		// rather than by the Node once a gatherer is configured.
		lm := node.NewLoadMonitor(node.LoadMonitorOptions{Logger: log})
		if err := p.Register(lm); err != nil {
			return stop, err
		}
		lm.Start()
		stop = lm.Stop
	}
	if !s.NoHost {
		if err := p.Register(hoststats.New("")); err != nil {
			return stop, err
		}
	}
	if s.Statsd != "" {
		srv, err := statsd.Listen(s.Statsd, p, statsd.Options{Logger: log})
		if err != nil {
			return stop, fmt.Errorf("--statsd: %w", err)
		}
		prev := stop
		stop = func() { srv.Close(); prev() }
		log.Info("statsd listening", "addr", srv.Addr().String())
	}
	for _, t := range targets {
		if err := t.Register(p); err != nil {
			stop()
			return func() {}, err
		}
	}
	return stop, nil
}
