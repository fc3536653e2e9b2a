package web

import (
	"bytes"
	"capstats/internal/testutil"
	"context"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// findChromium returns the Chromium binary; without one the test fails
// (and says how to install it), or is skipped with -short.
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if testing.Short() {
		t.Skip("chromium not installed (skipped with -short)")
	}
	t.Fatal("chromium not found: run `make deps` (it installs the Debian package chromium)")
	return ""
}

// runChromium runs headless Chromium with a fresh profile, at most 60 s,
// and kills whatever is left of its process group afterwards.
func runChromium(t *testing.T, args ...string) []byte {
	t.Helper()
	bin := findChromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(),
	}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	pgid := cmd.Process.Pid
	err := cmd.Wait()
	syscall.Kill(-pgid, syscall.SIGKILL) // zygotes and helpers, if any are left
	if ctx.Err() != nil {
		t.Fatalf("chromium did not finish within 60 s; stderr:\n%s", tail(stderr.String(), 2000))
	}
	if err != nil {
		t.Fatalf("chromium: %v; stderr:\n%s", err, tail(stderr.String(), 2000))
	}
	return stdout.Bytes()
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

var rowRE = regexp.MustCompile(`(?s)<tr id="node-([a-z2-7]+)" class="node (up|down)" data-tubid="([a-z2-7]+)" data-state="(up|down)">(.*?)</tr>`)
var stateCellRE = regexp.MustCompile(`<td class="state"><span class="pill (up|down)">(up|down)</span></td>`)

// The status page, rendered by a real browser: every node is listed with
// the right state, the charts draw, and the screenshot shows the page.
func TestStatusPageInChromium(t *testing.T) {
	findChromium(t)
	l := startLive(t, 200*time.Millisecond, HistoryOptions{Window: 20 * time.Second, MaxPoints: 21})
	alpha := connect(t, l.d.Furl, "alpha", storageSnap(0.1))
	beta := connect(t, l.d.Furl, "beta <b>bold?</b>", storageSnap(0.2))
	gamma := connect(t, l.d.Furl, "gamma", storageSnap(0.3))
	anon := connect(t, l.d.Furl, "", storageSnap(0.4))
	nodes := []*fakeNode{alpha, beta, gamma, anon}

	// Loads that move, so that the charts have shapes.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		start := time.Now()
		tick := time.NewTicker(150 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			x := time.Since(start).Seconds()
			for i, n := range nodes {
				n.set(storageSnap(0.05 + 0.04*float64(i) + 0.03*math.Sin(x*1.3+float64(i))))
			}
		}
	}()
	testutil.WaitFor(t, "5 chart points per node", 30*time.Second, func() bool {
		for _, n := range nodes {
			if len(l.hist.Series(n.id.TubID(), DefaultStat, time.Now())) < 5 {
				return false
			}
		}
		return true
	})
	gamma.conn.Close()
	beta.setFail("disk on fire")
	testutil.WaitFor(t, "gamma down and beta failing", 15*time.Second, func() bool {
		for _, n := range l.d.Gatherer().File().Nodes {
			if n.TubID == gamma.id.TubID() && n.Up || n.TubID == beta.id.TubID() && !strings.Contains(n.LastError, "disk on fire") {
				return false
			}
		}
		return true
	})

	dom := string(runChromium(t, "--dump-dom", l.srv.URL+"/"))
	file := l.d.Gatherer().File()
	rows := rowRE.FindAllStringSubmatch(dom, -1)
	if len(rows) != len(file.Nodes) {
		t.Fatalf("%d node rows in the rendered page, want %d:\n%s", len(rows), len(file.Nodes), dom)
	}
	byID := map[string][]string{}
	for _, r := range rows {
		if r[1] != r[3] || r[2] != r[4] {
			t.Errorf("row attributes disagree: %q", r[0])
		}
		byID[r[3]] = r
	}
	for _, n := range file.Nodes {
		r, ok := byID[n.TubID]
		if !ok {
			t.Errorf("node %s (%q) not listed", n.TubID, n.Nickname)
			continue
		}
		want := "down"
		if n.Up {
			want = "up"
		}
		cell := stateCellRE.FindStringSubmatch(r[5])
		if r[4] != want || cell == nil || cell[1] != want || cell[2] != want {
			t.Errorf("node %q: rendered state %q / cell %q, want %s", n.Nickname, r[4], cell, want)
		}
		if !strings.Contains(r[5], "<polyline") {
			t.Errorf("node %q has no chart line", n.Nickname)
		}
	}
	if got := byID[gamma.id.TubID()][4]; got != "down" {
		t.Errorf("gamma, disconnected, shows %q", got)
	}
	if !strings.Contains(byID[beta.id.TubID()][5], "disk on fire") {
		t.Error("beta's last error is not shown")
	}
	if !strings.Contains(dom, "beta &lt;b&gt;bold?&lt;/b&gt;") {
		t.Error("a nickname with markup was not escaped")
	}
	if !strings.Contains(dom, `<span class="pill up">3 up</span> <span class="pill down">1 down</span>`) {
		t.Error("summary line does not say 3 up, 1 down")
	}

	shot := filepath.Join(t.TempDir(), "status.png")
	runChromium(t, "--screenshot="+shot, "--window-size=1200,800", "--hide-scrollbars", l.srv.URL+"/")
	checkScreenshot(t, shot)
	if keep := os.Getenv("CAPSTATS_KEEP_SCREENSHOT"); keep != "" {
		if b, err := os.ReadFile(shot); err == nil {
			os.WriteFile(keep, b, 0o644)
		}
	}
}

// checkScreenshot: a 1200×800 PNG that is not blank, with the green of
// "up" and the red of "down" in it.
func checkScreenshot(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1200 || b.Dy() != 800 {
		t.Errorf("screenshot is %dx%d, want 1200x800", b.Dx(), b.Dy())
	}
	colours := map[uint32]int{}
	green, red, blue := 0, 0, 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			r, g, bl = r>>8, g>>8, bl>>8
			colours[r<<16|g<<8|bl]++
			switch {
			case near(r, g, bl, 0x1a, 0x7f, 0x37):
				green++
			case near(r, g, bl, 0xcf, 0x22, 0x2e):
				red++
			case near(r, g, bl, 0x09, 0x69, 0xda):
				blue++
			}
		}
	}
	if len(colours) < 50 {
		t.Errorf("screenshot has only %d colours: blank?", len(colours))
	}
	if green < 200 || red < 200 || blue < 50 {
		t.Errorf("screenshot lacks the up green (%d px), down red (%d px) or chart blue (%d px)", green, red, blue)
	}
	t.Logf("screenshot: %d colours, %d green, %d red, %d blue pixels", len(colours), green, red, blue)
}

func near(r, g, b, wr, wg, wb uint32) bool {
	d := func(a, b uint32) uint32 {
		if a > b {
			return a - b
		}
		return b - a
	}
	return d(r, wr) < 12 && d(g, wg) < 12 && d(b, wb) < 12
}
