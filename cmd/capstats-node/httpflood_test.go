package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"capstats/internal/testbin"
)

// TestHTTPKeepAliveFlood holds more keep-alive connections to --http than
// the node has descriptors: a new client is still served.
func TestHTTPKeepAliveFlood(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("no prlimit(1)")
	}
	p := start(t, prlimit, "--nofile=128:128", "--", testbin.Build(t, "capstats-node"), "--basedir", t.TempDir(), "--http", "127.0.0.1:0")
	base := p.waitLog(t, `url="?(http://127\.0\.0\.1:\d+)/`)
	addr := strings.TrimPrefix(base, "http://")
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
			fmt.Fprintf(c, "GET /statistics?t=json HTTP/1.1\r\nHost: x\r\n\r\n")
			br := bufio.NewReader(c)
			for {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	for range 3 {
		if body, _ := get(t, base+"/metrics"); !strings.Contains(body, "node_uptime") {
			t.Fatalf("/metrics during the flood:\n%s", body)
		}
	}
	if strings.Contains(p.stderr.String(), "too many open files") {
		t.Errorf("the node ran out of descriptors:\n%s", p.stderr)
	}
	p.stopWith(t, syscall.SIGTERM)
}
