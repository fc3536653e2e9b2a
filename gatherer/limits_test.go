package gatherer

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
	"unicode"
	"unsafe"

	"capstats/capnp/tub"
	"capstats/internal/fakenode"
	"capstats/internal/testutil"
	"capstats/statsfile"
)

func TestCleanText(t *testing.T) {
	long := strings.Repeat("n", 8<<20)
	nick := cleanNickname("  " + long)
	if len(nick) > maxNicknameLen {
		t.Errorf("nickname of %d bytes", len(nick))
	}
	// A copy: it does not point into the 8 MiB string.
	p, start := uintptr(unsafe.Pointer(unsafe.StringData(nick))), uintptr(unsafe.Pointer(unsafe.StringData(long)))
	if p >= start && p < start+uintptr(len(long)) {
		t.Error("the nickname pins the string it was cut from")
	}
	if got := cleanNickname("  storage\x1b[31m 1\n "); got != "storage[31m 1" {
		t.Errorf("nickname %q", got)
	}
	e := cleanError("boom\x1b[2J\nNICK  TUBID  forged\r\t" + strings.Repeat("é", 4000) + "\xff")
	if len(e) > maxErrorLen || !strings.HasSuffix(e, "…") || !strings.HasPrefix(e, "boom [2J NICK  TUBID  forged  é") {
		t.Errorf("error text %d bytes: %.60q", len(e), e)
	}
	for _, r := range e {
		if unicode.IsControl(r) {
			t.Fatalf("control character %U left in %q", r, e)
		}
	}
	if got := cleanError("short \xff"); got != "short \uFFFD" {
		t.Errorf("%q", got)
	}
}

func TestHostileErrorTextCleanedEverywhere(t *testing.T) {
	d, logs := startDaemon(t, Config{Interval: time.Second})
	msg := "\x1b[2J\x1b[31mpwned\nNICKNAME  TUBID  forged-row\n" + strings.Repeat("x", 200<<10)
	n, _ := fakenode.Connect(t, d.Furl, "evil", fakenode.Fail(msg))
	var entry statsfile.Node
	testutil.WaitFor(t, "the error recorded", 20*time.Second, func() bool {
		f, err := statsfile.Load(d.g.cfg.StatsFile)
		if err != nil {
			return false
		}
		for _, e := range f.Nodes {
			if e.TubID == n.TubID() && strings.Contains(e.LastError, "pwned") {
				entry = e
				return true
			}
		}
		return false
	})
	if len(entry.LastError) > maxErrorLen || strings.ContainsAny(entry.LastError, "\x1b\n") {
		t.Errorf("last_error of %d bytes: %.80q", len(entry.LastError), entry.LastError)
	}
	if strings.Contains(logs.String(), "\x1b") || len(logs.String()) > 100<<10 {
		t.Errorf("the log got the raw text (%d bytes)", len(logs.String()))
	}
	if fi, _ := os.Stat(d.g.cfg.StatsFile); fi.Size() > 8<<10 {
		t.Errorf("stats.json is %d bytes", fi.Size())
	}
	// gatherer status: one row per node, whatever the file holds (a file
	// written by an older version, or edited by hand).
	var b bytes.Buffer
	f := &statsfile.File{Nodes: []statsfile.Node{{TubID: "t\x1b]0;x\x07", Nickname: "a\nb\tc\u2028", LastError: msg[:60] + "\xff"}}}
	if err := WriteTable(&b, f, time.Now()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.Count(out, "\n") != 2 || strings.ContainsAny(out, "\x1b\x07\t") || strings.Contains(out, "\u2028") {
		t.Errorf("status output:\n%q", out)
	}
	for _, want := range []string{`a\x0ab\x09c\u2028`, `t\x1b]0;x\x07`, `\x1b[2J`, `\xff`} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %s:\n%s", want, out)
		}
	}
}

func TestLongNicknamesNotPinned(t *testing.T) {
	d, logs := startDaemon(t, Config{Interval: time.Hour})
	// A provide was once cut ("connection closed") with one core busy;
	// the gatherer's log says which limit, if any, closed it.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gatherer log:\n%s", logs.String())
		}
	})
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	long := strings.Repeat("n", 900<<10) // under the gatherer's 1 MiB message limit
	for range 40 {
		_, conn := fakenode.Connect(t, d.Furl, long, fakenode.AnswerWith(sample))
		conn.Close()
	}
	// 40 pinned messages would be 36 MiB.
	if grew := int64(heap()) - int64(before); grew > 12<<20 {
		t.Errorf("heap grew by %d MiB for 40 nodes with long nicknames", grew>>20)
	}
	for _, e := range d.g.File().Nodes {
		if len(e.Nickname) != maxNicknameLen {
			t.Errorf("nickname of %d bytes", len(e.Nickname))
		}
	}
}

// attach connects a new identity and says whether provide succeeded.
func attach(t *testing.T, d *Daemon, nick string) (*fakenode.Provider, func(), error) {
	t.Helper()
	p := fakenode.New(t, fakenode.AnswerWith(sample))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := p.Attach(ctx, d.Furl, nick)
	if err != nil {
		return p, func() {}, err
	}
	t.Cleanup(func() { conn.Close() })
	return p, func() {
		conn.Close()
		<-conn.Done()
	}, nil
}

func hasNode(d *Daemon, tubID string) bool {
	for _, e := range d.g.File().Nodes {
		if e.TubID == tubID {
			return true
		}
	}
	return false
}

func TestMaxNodesEvictsDownNeverUp(t *testing.T) {
	d, logs := startDaemon(t, Config{Interval: time.Hour, MaxNodes: 3})
	a, _, _ := attach(t, d, "a")
	b, closeB, _ := attach(t, d, "b")
	c, closeC, _ := attach(t, d, "c")
	closeC()
	testutil.WaitFor(t, "c down", 20*time.Second, func() bool { return d.g.Connected() == 2 })
	time.Sleep(10 * time.Millisecond)
	closeB() // down after c: c has been down longest
	testutil.WaitFor(t, "b down", 20*time.Second, func() bool { return d.g.Connected() == 1 })

	e, _, err := attach(t, d, "e")
	if err != nil {
		t.Fatalf("a new node with room to make: %v", err)
	}
	if hasNode(d, c.TubID()) || !hasNode(d, b.TubID()) || !hasNode(d, e.TubID()) || !hasNode(d, a.TubID()) {
		t.Fatalf("want c (down longest) evicted, a, b, e kept: %+v", d.g.File().Nodes)
	}
	f, _, err := attach(t, d, "f") // evicts b
	if err != nil || hasNode(d, b.TubID()) {
		t.Fatalf("f: %v, b still there: %v", err, hasNode(d, b.TubID()))
	}
	// a, e, f are up: a new one is refused and nobody is displaced.
	g, _, err := attach(t, d, "g")
	if err == nil || !strings.Contains(err.Error(), "max-nodes") {
		t.Fatalf("g: %v, want a refusal", err)
	}
	if hasNode(d, g.TubID()) || !hasNode(d, a.TubID()) || !hasNode(d, e.TubID()) || !hasNode(d, f.TubID()) || len(d.g.File().Nodes) != 3 {
		t.Errorf("after the refusal: %+v", d.g.File().Nodes)
	}
	if !strings.Contains(logs.String(), "level=WARN msg=\"new node refused\"") {
		t.Errorf("no warning:\n%s", logs)
	}
	if m := d.g.Metrics(); m.NodesEvicted != 2 || m.NodesRefused != 1 {
		t.Errorf("evicted %d, refused %d", m.NodesEvicted, m.NodesRefused)
	}
	// A known node comes back even when full.
	a2 := fakenode.New(t, fakenode.AnswerWith(sample))
	a2.ID = a.ID
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := a2.Attach(ctx, d.Furl, "a again")
	if err != nil {
		t.Fatalf("a known node refused: %v", err)
	}
	conn.Close()
}

func TestNewIdentitiesRateLimitedPerAddress(t *testing.T) {
	d, _ := startDaemon(t, Config{Interval: time.Hour, NewNodeBurst: 3, NewNodeEvery: time.Hour})
	first, closeFirst, err := attach(t, d, "1")
	if err != nil {
		t.Fatal(err)
	}
	for _, nick := range []string{"2", "3"} {
		if _, _, err := attach(t, d, nick); err != nil {
			t.Fatalf("%s: %v", nick, err)
		}
	}
	if _, _, err := attach(t, d, "4"); err == nil || !strings.Contains(err.Error(), "too many new node identities") {
		t.Fatalf("the 4th new identity from one address: %v", err)
	}
	if n := len(d.g.File().Nodes); n != 3 {
		t.Errorf("%d entries", n)
	}
	// Known identities are not new: they reconnect freely.
	closeFirst()
	again := fakenode.New(t, fakenode.AnswerWith(sample))
	again.ID = first.ID
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := again.Attach(ctx, d.Furl, "1")
	if err != nil {
		t.Fatalf("a known identity refused: %v", err)
	}
	conn.Close()
}

func TestForgetAfter(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "g")
	if err := Create(dir, CreateOptions{Hostname: "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	// An entry from the file, last polled long ago.
	old := &statsfile.File{Nodes: []statsfile.Node{{TubID: strings.Repeat("o", 32), Nickname: "old", LastPoll: float64(time.Now().Add(-time.Hour).Unix())}}}
	if err := statsfile.WriteFile(filepath.Join(dir, StatsFile), old); err != nil {
		t.Fatal(err)
	}
	d, err := Start(dir, Config{Interval: time.Second, ForgetAfter: 2 * time.Second}, tub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done; d.Close() }()

	stay, _, _ := attach(t, d, "stay")
	leave, closeLeave, _ := attach(t, d, "leave")
	testutil.WaitFor(t, "the old entry forgotten", 20*time.Second, func() bool { return !hasNode(d, strings.Repeat("o", 32)) })
	closeLeave()
	testutil.WaitFor(t, "the node that left forgotten", 20*time.Second, func() bool { return !hasNode(d, leave.TubID()) })
	if !hasNode(d, stay.TubID()) {
		t.Error("a node that is up was forgotten")
	}
	// The round that forgot them writes the file.
	testutil.WaitFor(t, "stats.json without them", 20*time.Second, func() bool {
		f, err := statsfile.Load(filepath.Join(dir, StatsFile))
		return err == nil && len(f.Nodes) == 1 && f.Nodes[0].TubID == stay.TubID()
	})
	if n := d.g.Metrics().NodesForgotten; n != 2 {
		t.Errorf("forgotten %d", n)
	}
}

func TestSymlinkedStatsFileWrittenThrough(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "g")
	if err := Create(dir, CreateOptions{Hostname: "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	web := t.TempDir()
	target := filepath.Join(web, "stats.json")
	if err := os.Symlink(target, filepath.Join(dir, StatsFile)); err != nil {
		t.Fatal(err)
	}
	// A temp file a crash left next to the target.
	tmp := filepath.Join(web, ".stats.json.tmp-0123456789abcdef")
	os.WriteFile(tmp, nil, 0o644)
	d, err := Start(dir, Config{Interval: time.Second}, tub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p, _, _ := attach(t, d, "linked")
	testutil.WaitFor(t, "the node polled", 20*time.Second, func() bool { return p.Calls() > 0 })
	d.g.Round(context.Background())
	d.Close()
	if fi, err := os.Lstat(filepath.Join(dir, StatsFile)); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("stats.json is no longer a link: %v", err)
	}
	f, err := statsfile.Load(target)
	if err != nil || len(f.Nodes) != 1 || f.Nodes[0].Nickname != "linked" {
		t.Fatalf("target: %v %+v", err, f)
	}
	if _, err := os.Stat(tmp); err == nil {
		t.Error("the temp file next to the target was not cleaned")
	}
}
