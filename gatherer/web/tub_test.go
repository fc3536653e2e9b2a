package web

import (
	"net"
	"strings"
	"testing"
	"time"

	"capstats/capnp/tub"
	"capstats/openmetrics/omtest"
)

// /metrics shows the listener's refusals, counted by a real listener.
func TestMetricsShowTubRefusals(t *testing.T) {
	id, err := tub.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tub.Listen("127.0.0.1:0", id, tub.Options{MaxConns: 1, HandshakeTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var socks []net.Conn
	defer func() {
		for _, c := range socks {
			c.Close()
		}
	}()
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		socks = append(socks, c)
	}
	for deadline := time.Now().Add(20 * time.Second); ln.Metrics().Refused(tub.ReasonMaxConns) < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("listener counted %d refusals, want 2", ln.Metrics().Refused(tub.ReasonMaxConns))
		}
	}
	h := New(fixtureSource(), Options{Interval: time.Minute, Now: func() time.Time { return now }, Tub: ln})
	w := do(h, "GET", "/metrics")
	text := w.Body.String()
	if problems := omtest.Promtool(t, w.Body.Bytes()); len(problems) > 0 {
		t.Errorf("promtool:\n%s\n%s", strings.Join(problems, "\n"), text)
	}
	for _, want := range []string{
		`capstats_tub_refusals_total{reason="max_conns"} 2` + "\n",
		`capstats_tub_refusals_total{reason="fetch_timeout"} 0` + "\n",
		"capstats_tub_pending_handshakes 1\n",
		"capstats_tub_connections 0\n",
		"capstats_tub_max_connections 1\n",
		"capstats_tub_buffered_bytes 0\n",
		"capstats_tub_max_buffered_bytes 16777216\n",
		"capstats_tub_buffer_waits_total 0\n",
		"capstats_tub_buffer_wait_seconds_total 0\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, text)
		}
	}
}
