package statsd

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"capstats/node"
	"capstats/stats"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func snapshot(p *node.Provider) (counters, st map[string]string) {
	s := p.Snapshot(context.Background())
	counters, st = map[string]string{}, map[string]string{}
	for k, v := range s.Counters.All() {
		counters[k] = v.String()
	}
	for k, v := range s.Stats.All() {
		st[k] = v.String()
	}
	return counters, st
}

func TestAggregatorLines(t *testing.T) {
	p := node.NewProvider(node.ProviderOptions{Logger: quiet()})
	a, err := NewAggregator(p, Options{MaxNames: 8})
	if err != nil {
		t.Fatal(err)
	}
	a.Handle([]byte("hits:1|c\nhits:2|c|@0.5\r\nhits:1|c|#env:prod,role\nfrac:1|c|@0.3\n\n" +
		"temp:20|g\ntemp:+5|g\ntemp:-3|g\nload:0.5|g\n" +
		"lat:1:2:3|ms|#x\nsz:10|h\nsz:20|d\n" +
		"users:ann|s\nusers:bob|s\nusers:ann|s\n"))
	// Bad: no colon, no bar, unknown type, not a number, NaN, a space in the
	// name, an empty name, a bad rate, a type change, an event.
	a.Handle([]byte("nocolon|c\nnobar:1\nx:1|zz\nx:abc|c\nx:NaN|g\nsp ace:1|c\n:1|c\nx:1|c|@0\ntemp:1|c\n_e{5,4}:title|text"))
	c, s := snapshot(p)
	want := map[string]string{"hits": "6", "frac": "3", BadLinesCounter: "10", DroppedCounter: "0"}
	for k, w := range want {
		if c[k] != w {
			t.Errorf("counter %s = %q, want %s", k, c[k], w)
		}
	}
	wantStats := map[string]string{
		"temp": "22", "load": "0.5", "users": "2",
		"lat.samplesize": "3", "lat.mean": "2.0", "lat.50_0_percentile": "null", "lat.99_9_percentile": "null",
		"sz.samplesize": "2", "sz.mean": "15.0",
	}
	for k, w := range wantStats {
		if s[k] != w {
			t.Errorf("stat %s = %q, want %s", k, s[k], w)
		}
	}
	// A new window: timers and sets start again, gauges stay, fractions of
	// counts carry over (3 x 1/0.3 = 10).
	a.Handle([]byte("frac:1|c|@0.3\nfrac:1|c|@0.3\nlat:7|ms\n"))
	c, s = snapshot(p)
	if c["frac"] != "10" || s["lat.samplesize"] != "1" || s["lat.mean"] != "null" || s["users"] != "0" || s["temp"] != "22" || s["sz.samplesize"] != "0" {
		t.Errorf("second window: counters %v stats %v", c, s)
	}
	// The name bound: 7 names are known (x never parsed), so n1 is the 8th
	// and last; further names are dropped and counted.
	a.Handle([]byte("n1:1|c\nn2:1|c\nn3:1|c\n"))
	c, _ = snapshot(p)
	if c["n1"] != "1" || c["n2"] != "" || c[DroppedCounter] != "2" {
		t.Errorf("bound: n1 %q n2 %q dropped %q", c["n1"], c["n2"], c[DroppedCounter])
	}
}

func TestTimerPercentiles(t *testing.T) {
	p := node.NewProvider(node.ProviderOptions{Logger: quiet()})
	a, _ := NewAggregator(p, Options{MaxSamples: 500})
	var b bytes.Buffer
	for i := 1000; i >= 1; i-- {
		fmt.Fprintf(&b, "t:%d|ms\n", i)
	}
	a.Handle(b.Bytes())
	_, s := snapshot(p)
	if s["t.samplesize"] != "1000" || s["t.mean"] != "500.5" {
		t.Errorf("samplesize %s mean %s", s["t.samplesize"], s["t.mean"])
	}
	// 500 of the 1000 samples are kept: the median of a uniform sample
	// is near 500; 99_9 needs 1000 kept samples.
	med, _ := strconv.ParseFloat(s["t.50_0_percentile"], 64)
	if med < 400 || med > 600 || s["t.99_9_percentile"] != "null" || s["t.01_0_percentile"] == "null" {
		t.Errorf("percentiles of a sample: %v", s)
	}
}

// TestPythonStatsd sends with Debian's python3-statsd, a real client, over
// UDP on loopback.
func TestPythonStatsd(t *testing.T) {
	// Debian's python3-statsd is installed for Debian's python3, which a
	// pyenv or venv earlier on PATH does not see.
	py := "/usr/bin/python3"
	_, err := exec.LookPath(py)
	if err == nil {
		err = exec.Command(py, "-c", "import statsd").Run()
	}
	if err != nil {
		if testing.Short() {
			t.Skip("python3-statsd missing (-short)")
		}
		t.Fatal("python3-statsd is missing: run `make deps` (scripts/ensure-deps.sh installs Debian's python3-statsd)")
	}
	p := node.NewProvider(node.ProviderOptions{Logger: quiet()})
	srv, err := Listen("127.0.0.1:0", p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	port := srv.Addr().(*net.UDPAddr).Port

	// The client samples with random.random(); always sending lets the test
	// know what was sent, and the rate still goes on the wire (|@0.25).
	script := `
import sys, time, socket, statsd
import statsd.client.base as base
base.random.random = lambda: 0.0
c = statsd.StatsClient("127.0.0.1", int(sys.argv[1]))
N = int(sys.argv[2])
for i in range(N):
    c.incr("py.jobs")
    if i % 50 == 0:
        time.sleep(0.002)
for _ in range(10):
    with c.pipeline() as pipe:
        for _ in range(100):
            pipe.incr("py.batched", 2)
for _ in range(40):
    c.incr("py.sampled", 1, rate=0.25)
for _ in range(10):
    c.incr("py.tenth", 1, rate=0.1)
c.decr("py.down", 3)
c.gauge("py.temp", 20)
c.gauge("py.temp", 5, delta=True)
c.gauge("py.temp", -3, delta=True)
c.gauge("py.neg", -4)
for i in range(1, 101):
    c.timing("py.lat", i)
for v in ["ann", "bob", "ann", "cy"]:
    c.set("py.users", v)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b"py.bad|c\npy.bad2:x|c\npy.bad3:1|q", ("127.0.0.1", int(sys.argv[1])))
s.sendto(b"\xff\xfe:1|c", ("127.0.0.1", int(sys.argv[1])))
`
	const n = 500
	out, err := exec.Command(py, "-c", script, strconv.Itoa(port), strconv.Itoa(n)).CombinedOutput()
	if err != nil {
		t.Fatalf("python3: %v\n%s", err, out)
	}
	// The bad lines were sent last, on the same socket: once they are
	// counted, everything before them has been read.
	deadline := time.Now().Add(20 * time.Second)
	for p.Counter(BadLinesCounter).Load() < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("bad lines counted: %d of 4 after 20s", p.Counter(BadLinesCounter).Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	c, s := snapshot(p)
	want := map[string]string{
		"py.jobs": strconv.Itoa(n), "py.batched": "2000", "py.sampled": "160", "py.tenth": "100", "py.down": "-3",
		BadLinesCounter: "4", DroppedCounter: "0",
	}
	for k, w := range want {
		if c[k] != w {
			t.Errorf("counter %s = %q, want %s", k, c[k], w)
		}
	}
	wantStats := map[string]string{
		"py.temp": "22", "py.neg": "-4", "py.users": "3",
		"py.lat.samplesize": "100", "py.lat.mean": "50.5",
		"py.lat.01_0_percentile": "2.0", "py.lat.50_0_percentile": "51.0", "py.lat.95_0_percentile": "96.0",
		"py.lat.99_0_percentile": "100.0", "py.lat.99_9_percentile": "null",
	}
	for k, w := range wantStats {
		if s[k] != w {
			t.Errorf("stat %s = %q, want %s", k, s[k], w)
		}
	}
	// Nothing more arrives: the counts stay exact.
	c, _ = snapshot(p)
	if c["py.jobs"] != strconv.Itoa(n) || c["py.sampled"] != "160" {
		t.Errorf("second snapshot: %v", c)
	}
}

// TestShortBuffer: a datagram longer than MaxPacket is cut by the kernel;
// its complete lines count, the cut one is a bad line.
func TestShortBuffer(t *testing.T) {
	p := node.NewProvider(node.ProviderOptions{Logger: quiet()})
	srv, err := Listen("127.0.0.1:0", p, Options{MaxPacket: 32})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c, err := net.Dial("udp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("a:1|c\nb:2|c\nccccccccccccccccccccc:3|c\n")) // 41 bytes
	deadline := time.Now().Add(20 * time.Second)
	for p.Counter(BadLinesCounter).Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	c2, _ := snapshot(p)
	if c2["a"] != "1" || c2["b"] != "2" || c2["ccccccccccccccccccccc"] != "" || c2[BadLinesCounter] != "1" {
		t.Errorf("a cut datagram: %v", c2)
	}
}

func TestCloseStopsReader(t *testing.T) {
	p := node.NewProvider(node.ProviderOptions{Logger: quiet()})
	srv, err := Listen("127.0.0.1:0", p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen("not an address", p, Options{}); err == nil {
		t.Error("a bad address was accepted")
	}
}

func benchPacket() []byte {
	// A client's typical packet: mixed lines up to about 1400 bytes.
	var b strings.Builder
	for i := 0; b.Len() < 1350; i++ {
		switch i % 4 {
		case 0:
			fmt.Fprintf(&b, "app.requests.%d:1|c\n", i%16)
		case 1:
			fmt.Fprintf(&b, "app.latency.%d:%d.%d|ms\n", i%8, i%200, i%10)
		case 2:
			fmt.Fprintf(&b, "app.queue.%d:%d|g\n", i%8, i)
		default:
			fmt.Fprintf(&b, "app.sampled.%d:1|c|@0.1|#env:prod\n", i%4)
		}
	}
	return []byte(b.String())
}

// BenchmarkIngest is the listener's work per datagram without the socket:
// parsing and aggregation of about 40 lines.
func BenchmarkIngest(b *testing.B) {
	p := node.NewProvider(node.ProviderOptions{Logger: quiet()})
	a, _ := NewAggregator(p, Options{})
	pkt := benchPacket()
	lines := bytes.Count(pkt, []byte{'\n'})
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		a.Handle(pkt)
		if i%10000 == 0 {
			a.stats() // a poll window now and then, as in a node
		}
	}
	b.ReportMetric(float64(lines)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkUDPIngest sends datagrams over loopback to a Server and reports
// the lines it read per second (sending costs the same core's time under
// GOMAXPROCS=1).
func BenchmarkUDPIngest(b *testing.B) {
	p := node.NewProvider(node.ProviderOptions{Logger: quiet()})
	srv, err := Listen("127.0.0.1:0", p, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	conn, err := net.DialUDP("udp", nil, srv.Addr().(*net.UDPAddr))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	pkt := benchPacket()
	lines := bytes.Count(pkt, []byte{'\n'})
	// One counter line per packet tells how many arrived.
	pkt = append(pkt, "bench.packets:1|c\n"...)
	b.ResetTimer()
	for b.Loop() {
		conn.Write(pkt)
	}
	b.StopTimer()
	time.Sleep(200 * time.Millisecond)
	c, _ := snapshot(p)
	got, _ := strconv.Atoi(c["bench.packets"])
	b.ReportMetric(float64(got*(lines+1))/b.Elapsed().Seconds(), "lines/s")
	b.ReportMetric(100*float64(got)/float64(b.N), "%delivered")
}

var _ = stats.Null
