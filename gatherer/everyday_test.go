package gatherer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"capstats/capnp/statsrpc"
	"capstats/capnp/tub"
	"capstats/internal/fakenode"
	"capstats/internal/lockfile"
	"capstats/internal/testutil"
	"capstats/statsfile"
)

func TestForgetWhileRunningStaysForgotten(t *testing.T) {
	var forgotten []string
	var mu sync.Mutex
	d, _ := startDaemon(t, Config{Interval: time.Second, OnForget: func(id string) {
		mu.Lock()
		forgotten = append(forgotten, id)
		mu.Unlock()
	}})
	keep, _ := fakenode.Connect(t, d.Furl, "keep", fakenode.AnswerWith(sample))
	gone, goneConn := fakenode.Connect(t, d.Furl, "gone", fakenode.AnswerWith(sample))
	testutil.WaitFor(t, "both nodes in stats.json", 10*time.Second, func() bool {
		m := readStats(t, d.g.cfg.StatsFile)
		return m[keep.TubID()] != nil && m[gone.TubID()]["up"] == true
	})
	// A connected node is not decommissioned: refused, and kept.
	if _, _, err := ForgetNode(d.Dir, "gone"); err == nil || !strings.Contains(err.Error(), "is connected") {
		t.Fatalf("forget of a connected node: err = %v, want a refusal", err)
	}
	goneConn.Close()
	testutil.WaitFor(t, "gone down", 10*time.Second, func() bool { return readStats(t, d.g.cfg.StatsFile)[gone.TubID()]["up"] == false })
	n, live, err := ForgetNode(d.Dir, "gone")
	if err != nil || !live || n.TubID != gone.TubID() {
		t.Fatalf("forget: %+v live=%v err=%v", n, live, err)
	}
	if readStats(t, d.g.cfg.StatsFile)[gone.TubID()] != nil {
		t.Fatal("stats.json still holds the node right after forget")
	}
	mu.Lock()
	if len(forgotten) != 1 || forgotten[0] != gone.TubID() {
		t.Errorf("OnForget saw %v, want [%s]", forgotten, gone.TubID())
	}
	mu.Unlock()
	// Rounds go on, and do not bring it back.
	rounds := d.g.Metrics().Rounds
	testutil.WaitFor(t, "three more rounds", 10*time.Second, func() bool { return d.g.Metrics().Rounds >= rounds+3 })
	m := readStats(t, d.g.cfg.StatsFile)
	if m[gone.TubID()] != nil || m[keep.TubID()] == nil {
		t.Fatalf("after more rounds: gone present=%v, keep present=%v", m[gone.TubID()] != nil, m[keep.TubID()] != nil)
	}
	if _, _, err := ForgetNode(d.Dir, "gone"); err == nil || !strings.Contains(err.Error(), "no node") {
		t.Errorf("second forget: err = %v", err)
	}
}

func TestForgetStoppedEditsFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "g")
	if err := Create(dir, CreateOptions{Hostname: "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, StatsFile)
	id := func(c byte) string { return strings.Repeat(string(c), 32) }
	f := &statsfile.File{Nodes: []statsfile.Node{
		{TubID: id('a'), Nickname: "twin", Timestamp: 1},
		{TubID: id('b'), Nickname: "twin", Timestamp: 2},
		{TubID: id('c'), Nickname: "solo", Timestamp: 3},
	}}
	if err := statsfile.WriteFile(path, f); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ForgetNode(dir, "twin"); err == nil || !strings.Contains(err.Error(), id('a')) || !strings.Contains(err.Error(), id('b')) {
		t.Fatalf("ambiguous nickname: err = %v, want one listing both tub IDs", err)
	}
	// A gatherer that holds the lock but does not answer yet (starting):
	// refused, nothing changed.
	l, err := lockfile.Acquire(filepath.Join(dir, LockFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ForgetNode(dir, "solo"); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Errorf("forget while the basedir is locked: err = %v", err)
	}
	if back, _ := statsfile.Load(path); len(back.Nodes) != 3 {
		t.Fatalf("forget under a held lock changed the file: %+v", back.Nodes)
	}
	l.Release()
	if _, live, err := ForgetNode(dir, "solo"); err != nil || live {
		t.Fatalf("forget solo: live=%v err=%v", live, err)
	}
	if _, _, err := ForgetNode(dir, id('b')); err != nil {
		t.Fatal(err)
	}
	back, err := statsfile.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Nodes) != 1 || back.Nodes[0].TubID != id('a') {
		t.Fatalf("left %+v, want only %s", back.Nodes, id('a'))
	}
	// The next start does not bring them back either.
	g, err := New(Config{StatsFile: path})
	if err != nil || len(g.File().Nodes) != 1 {
		t.Fatalf("reload: %v", err)
	}
}

func TestRotateFurlLive(t *testing.T) {
	d, _ := startDaemon(t, Config{Interval: 500 * time.Millisecond})
	old := d.CurrentFurl()
	n, conn := fakenode.Connect(t, old, "n", fakenode.AnswerWith(sample))
	// A second connection that fetched the Gatherer under the old furl but
	// has not provided yet.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	early, err := tub.Dial(ctx, old, fakenode.New(t, nil).ID, capnp.Client{}, tub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	testutil.WaitFor(t, "node up", 10*time.Second, func() bool { return readStats(t, d.g.cfg.StatsFile)[n.TubID()]["up"] == true })

	f, live, err := RotateFurl(d.Dir)
	if err != nil || !live {
		t.Fatalf("rotate: live=%v err=%v", live, err)
	}
	if f.Swissnum == old.Swissnum || f.TubID != old.TubID {
		t.Fatalf("new furl %s from %s: want a new swiss number, the same tub ID", f, old)
	}
	if got, _ := readLine(filepath.Join(d.Dir, FurlFile)); got != f.String() {
		t.Errorf("furl file %q, want %q", got, f)
	}
	if fi, _ := os.Stat(filepath.Join(d.Dir, FurlFile)); fi.Mode().Perm() != 0o600 {
		t.Errorf("furl file mode %o", fi.Mode().Perm())
	}
	select {
	case <-conn.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the node that came with the old furl is still connected")
	}
	testutil.WaitFor(t, "node down with the reason", 10*time.Second, func() bool {
		e := readStats(t, d.g.cfg.StatsFile)[n.TubID()]
		return e["up"] == false && e["last_error"] == RotatedError
	})
	// The old furl is refused; so is provide on what was fetched under it.
	if _, err := n.Attach(ctx, old, "n"); err == nil || !strings.Contains(err.Error(), "no object with that swiss number") {
		t.Errorf("attach with the old furl: err = %v, want a refusal", err)
	}
	p := fakenode.New(t, fakenode.AnswerWith(sample))
	if err := provideOn(ctx, early, p); err == nil {
		t.Error("provide on a Gatherer fetched under the old furl succeeded")
	}
	// The new one works, and the node is up again.
	c2, err := n.Attach(ctx, f, "n")
	if err != nil {
		t.Fatalf("attach with the new furl: %v", err)
	}
	defer c2.Close()
	testutil.WaitFor(t, "node up again", 10*time.Second, func() bool {
		e := readStats(t, d.g.cfg.StatsFile)[n.TubID()]
		return e["up"] == true && e["last_error"] == ""
	})
}

func TestRotateFurlStopped(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "g")
	if err := Create(dir, CreateOptions{Hostname: "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := RotateFurl(dir); err == nil || !strings.Contains(err.Error(), "no furl file") {
		t.Fatalf("rotate before the first start: err = %v", err)
	}
	d, err := Start(dir, Config{}, tub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	old := d.Furl
	d.Close()
	f, live, err := RotateFurl(dir)
	if err != nil || live || f.Swissnum == old.Swissnum {
		t.Fatalf("rotate stopped: %s live=%v err=%v", f, live, err)
	}
	d, err = Start(dir, Config{}, tub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Furl.String() != f.String() {
		t.Fatalf("started with %s, want the rotated %s", d.Furl, f)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p := fakenode.New(t, fakenode.AnswerWith(sample))
	if _, err := p.Attach(ctx, old, "x"); err == nil {
		t.Error("the old furl still works after a restart")
	}
	c, err := p.Attach(ctx, f, "x")
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestSetLocationKeepsTubID(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "g")
	if err := Create(dir, CreateOptions{Hostname: "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	d, err := Start(dir, Config{}, tub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	old := d.Furl
	d.Close()
	locBefore, _ := readLine(filepath.Join(dir, LocationFile))
	for _, bad := range [][2]string{{"", ""}, {"nonsense", ""}, {"", "tcp:x"}} {
		var ue *UsageError
		if _, err := SetLocation(dir, bad[0], bad[1]); !errors.As(err, &ue) {
			t.Errorf("SetLocation(%q, %q): err = %v, want a usage error", bad[0], bad[1], err)
		}
	}
	if loc, _ := readLine(filepath.Join(dir, LocationFile)); loc != locBefore {
		t.Errorf("a refused SetLocation changed the location file: %q, was %q", loc, locBefore)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	hint := "tcp:127.0.0.1:" + strconv.Itoa(port)
	f, err := SetLocation(dir, hint, "tcp:"+strconv.Itoa(port)+":interface=127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if f.TubID != old.TubID || f.Swissnum != old.Swissnum || !strings.Contains(f.String(), "@"+hint+"/") {
		t.Fatalf("furl %s from %s: want the same tub ID and swiss number, hint %s", f, old, hint)
	}
	if got, _ := readLine(filepath.Join(dir, FurlFile)); got != f.String() {
		t.Errorf("furl file %q, want %q", got, f)
	}
	d, err = Start(dir, Config{}, tub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Listener.Port() != port || d.Furl.String() != f.String() {
		t.Fatalf("after the move: listening on %d with %s; want %d with %s", d.Listener.Port(), d.Furl, port, f)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := fakenode.New(t, fakenode.AnswerWith(sample)).Attach(ctx, f, "x")
	if err != nil {
		t.Fatalf("attach at the new place: %v", err)
	}
	c.Close()
}

func TestControlSocket(t *testing.T) {
	// Long enough that the socket needs the /proc/self/fd name.
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60))
	if err := Create(dir, CreateOptions{Hostname: "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	d, err := Start(dir, Config{}, tub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, ControlSocket)
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v %v", fi, err)
	}
	info, err := Running(dir)
	if err != nil || info.PID != os.Getpid() {
		t.Fatalf("Running: %+v %v", info, err)
	}
	// A second gatherer on the same basedir is refused.
	if _, err := Start(dir, Config{}, tub.Options{}); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second Start: err = %v", err)
	}
	if _, err := callControl(dir, controlRequest{Op: "format-disk"}); err == nil || !strings.Contains(err.Error(), "unknown control request") {
		t.Errorf("unknown request: err = %v", err)
	}
	d.Close()
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after Close: %v", err)
	}
	if _, err := Running(dir); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Running after Close: %v", err)
	}
	// A socket left by a gatherer that died is replaced.
	os.WriteFile(sock, nil, 0o600) // nothing listens behind it
	d, err = Start(dir, Config{}, tub.Options{})
	if err != nil {
		t.Fatalf("start over a stale socket: %v", err)
	}
	d.Close()
}

func TestRestartWritesOnceNodesAnswered(t *testing.T) {
	d, _ := startDaemon(t, Config{Interval: time.Second})
	dir := d.Dir
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ps := []*fakenode.Provider{fakenode.New(t, fakenode.AnswerWith(sample)), fakenode.New(t, fakenode.AnswerWith(sample))}
	furl := d.CurrentFurl()
	for i, p := range ps {
		go p.StayAttached(ctx, furl, []string{"a", "b"}[i])
	}
	path := filepath.Join(dir, StatsFile)
	upSince := func(t0 time.Time) bool {
		f, err := statsfile.Load(path)
		if err != nil || len(f.Nodes) != 2 {
			return false
		}
		for _, n := range f.Nodes {
			if !n.Up || n.Timestamp < epoch(t0) {
				return false
			}
		}
		return true
	}
	testutil.WaitFor(t, "both up", 10*time.Second, func() bool { return upSince(time.Time{}) })

	// Restart with a long interval: without the settle, the first write
	// would be at once with both down, and the next a minute later.
	d.Close()
	if f, _ := statsfile.Load(path); f.Nodes[0].LastError != Stopped {
		t.Errorf("a stopped gatherer's file says %q, want %q", f.Nodes[0].LastError, Stopped)
	}
	restarted := time.Now()
	d2, err := Start(dir, Config{Interval: time.Minute}, tub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d2.Run(runCtx); close(done) }()
	defer func() { stop(); <-done; d2.Close() }()
	// Before the first round of the one-minute interval: the settle wrote
	// the file once the nodes were back. (A bound under the interval, not
	// a speed target: without the settle the write comes at a minute.)
	took := testutil.WaitFor(t, "both up in the file after the restart", 50*time.Second, func() bool { return upSince(restarted) })
	t.Logf("both up in stats.json %s after the restart", took)
	// Never a write with them down and no reason given.
	f, _ := statsfile.Load(path)
	for _, n := range f.Nodes {
		if n.LastError != "" {
			t.Errorf("%s: last_error %q after it answered", n.Nickname, n.LastError)
		}
	}
}

// provideOn calls provide(p) on the Gatherer that conn fetched.
func provideOn(ctx context.Context, conn *tub.Conn, p *fakenode.Provider) error {
	fut, rel := statsrpc.Gatherer(conn.Object()).Provide(ctx, func(a statsrpc.Gatherer_provide_Params) error {
		if err := a.SetNickname("early"); err != nil {
			return err
		}
		return a.SetProvider(p.Client())
	})
	defer rel()
	_, err := fut.Struct()
	return err
}

// Every command CheckBasedir suggests works on the directory it names.
func TestCheckBasedirAdviceWorks(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	empty := t.TempDir()
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "notes.txt"), []byte("x"), 0o644)
	for _, dir := range []string{missing, empty} {
		err := CheckBasedir(dir)
		if err == nil || !strings.Contains(err.Error(), "gatherer create --basedir "+dir+" --hostname HOST") {
			t.Fatalf("CheckBasedir(%s) = %v", dir, err)
		}
		if err := Create(dir, CreateOptions{Hostname: "127.0.0.1"}); err != nil {
			t.Fatalf("the suggested create on %s: %v", dir, err)
		}
		if err := CheckBasedir(dir); err != nil {
			t.Errorf("after create: %v", err)
		}
	}
	err := CheckBasedir(other)
	if err == nil || strings.Contains(err.Error(), "--basedir "+other) || !strings.Contains(err.Error(), "NEWDIR") {
		t.Fatalf("CheckBasedir of a directory with other files = %v: must not suggest create on it", err)
	}
	if Create(other, CreateOptions{Hostname: "127.0.0.1"}) == nil {
		t.Fatal("create accepted a directory with other files")
	}
}

// Run as root (sudo), the commands leave the files to the basedir's owner,
// the gatherer's own user.
func TestCommandsAsRootKeepOwner(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	const uid, gid = 65534, 65534
	dir := filepath.Join(t.TempDir(), "g")
	if err := Create(dir, CreateOptions{Hostname: "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	d, err := Start(dir, Config{}, tub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	statsfile.WriteFile(filepath.Join(dir, StatsFile), &statsfile.File{Nodes: []statsfile.Node{{TubID: strings.Repeat("a", 32), Nickname: "x"}}})
	filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error { return os.Lchown(p, uid, gid) })
	if _, _, err := ForgetNode(dir, "x"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := RotateFurl(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := SetLocation(dir, "tcp:127.0.0.1:1234", "tcp:1234"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{StatsFile, FurlFile, PortFile, LocationFile, LockFile} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != uid || st.Gid != gid {
			t.Errorf("%s is owned by %d:%d after the commands, want the basedir's %d:%d", f, st.Uid, st.Gid, uid, gid)
		}
	}
}

// Every way a node leaves the gatherer reaches OnForget, --forget-after too.
func TestOnForgetSeesForgetAfter(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "g")
	if err := Create(dir, CreateOptions{Hostname: "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	old := strings.Repeat("o", 32)
	f := &statsfile.File{Nodes: []statsfile.Node{{TubID: old, Nickname: "old", LastPoll: float64(time.Now().Add(-time.Hour).Unix())}}}
	if err := statsfile.WriteFile(filepath.Join(dir, StatsFile), f); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	d, err := Start(dir, Config{Interval: time.Second, ForgetAfter: 2 * time.Second, OnForget: func(id string) { got <- id }}, tub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done; d.Close() }()
	select {
	case id := <-got:
		if id != old {
			t.Errorf("OnForget(%s), want %s", id, old)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("OnForget not called for an entry --forget-after dropped")
	}
}
