package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"capstats/internal/testutil"
	"capstats/statsfile"
)

// TestKeepAliveFloodLeavesDescriptors holds more keep-alive connections to
// --http than the gatherer has descriptors: stats.json is still written
// every round and /metrics still answers a new client.
func TestKeepAliveFloodLeavesDescriptors(t *testing.T) {
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Skip("no prlimit(1)")
	}
	dir := filepath.Join(t.TempDir(), "g")
	d := startRunWith(t, []string{"prlimit", "--nofile=128:128", "--"}, "--basedir", dir, "--interval", "1s", "--http", "127.0.0.1:0")
	var base string
	testutil.WaitFor(t, "the http address in the log", 20*time.Second, func() bool {
		m := regexp.MustCompile(`url=(http://127\.0\.0\.1:\d+)/`).FindStringSubmatch(d.stderr.String())
		if m != nil {
			base = m[1]
		}
		return m != nil
	})
	addr := strings.TrimPrefix(base, "http://")
	// 200 clients, each makes a request and keeps its connection open;
	// they finish by themselves when the server closes them or at the end.
	done := make(chan struct{})
	defer close(done)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 200 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		go func() {
			fmt.Fprintf(c, "GET /stats.json HTTP/1.1\r\nHost: x\r\n\r\n")
			br := bufio.NewReader(c)
			for {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				select {
				case <-done:
					return
				default:
				}
			}
		}()
	}
	path := filepath.Join(dir, "stats.json")
	fi0, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// Rounds go on writing the file...
	testutil.WaitFor(t, "3 more writes of stats.json", 30*time.Second, func() bool {
		fi, err := os.Stat(path)
		return err == nil && fi.ModTime().Sub(fi0.ModTime()) >= 2*time.Second
	})
	if _, err := statsfile.Load(path); err != nil {
		t.Fatal(err)
	}
	// ...and a new client is served.
	cl := &http.Client{Timeout: 20 * time.Second}
	for i := range 3 {
		resp, err := cl.Get(base + "/metrics")
		if err != nil {
			t.Fatalf("/metrics %d during the flood: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), "capstats_gatherer_write_failures_total 0") {
			t.Fatalf("/metrics: %s, write failures:\n%s", resp.Status, grep(string(b), "write_failures"))
		}
	}
	if strings.Contains(d.stderr.String(), "too many open files") {
		t.Errorf("the gatherer ran out of descriptors:\n%s", d.stderr)
	}
	d.stop(t)
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
