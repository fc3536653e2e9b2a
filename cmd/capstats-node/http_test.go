package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"capstats/internal/testbin"
)

func get(t *testing.T, url string) (string, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, b)
	}
	return string(b), resp.Header.Get("Content-Type")
}

func TestHTTPServesStatistics(t *testing.T) {
	p := start(t, testbin.Build(t, "capstats-node"), "--basedir", t.TempDir(), "--http", "127.0.0.1:0")
	base := p.waitLog(t, `url="?(http://127\.0\.0\.1:\d+)/`)
	body, ctype := get(t, base+"/statistics?t=json")
	if !strings.HasPrefix(ctype, "application/json") {
		t.Errorf("content type %q", ctype)
	}
	var snap struct {
		Counters map[string]any `json:"counters"`
		Stats    map[string]any `json:"stats"`
	}
	if err := json.Unmarshal([]byte(body), &snap); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, body)
	}
	if _, ok := snap.Stats["node.uptime"]; !ok {
		t.Errorf("no node.uptime in %s", body)
	}
	body, ctype = get(t, base+"/statistics?t=openmetrics")
	if !strings.Contains(ctype, "openmetrics") || !strings.HasSuffix(body, "# EOF\n") || !strings.Contains(body, "node_uptime") {
		t.Errorf("openmetrics (%s):\n%s", ctype, body)
	}
	p.stopWith(t, syscall.SIGTERM)
}

func TestHTTPAddressTaken(t *testing.T) {
	p := start(t, testbin.Build(t, "capstats-node"), "--basedir", t.TempDir(), "--http", "127.0.0.1:0")
	addr := p.waitLog(t, `url="?http://(127\.0\.0\.1:\d+)/`)
	stderr, code := runOnce(t, "--basedir", t.TempDir(), "--http", addr)
	checkOneLineError(t, stderr, code, "--http")
}
