package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"capstats/internal/testbin"
	"capstats/internal/testutil"
)

func TestRunRefusesUnusableDurations(t *testing.T) {
	cases := []struct {
		args []string
		flag string
	}{
		{[]string{"--interval", "0"}, "--interval"},
		{[]string{"--interval=-1s"}, "--interval"},
		{[]string{"--interval", "1ns"}, "--interval"},
		{[]string{"--interval", "999ms"}, "--interval"},
		{[]string{"--timeout", "0"}, "--timeout"},
		{[]string{"--timeout=-5s"}, "--timeout"},
		{[]string{"--timeout", "100ms"}, "--timeout"},
		{[]string{"--interval", "10s", "--timeout", "11s"}, "--timeout"},
		{[]string{"--write-after", "0s"}, "--write-after"},
		{[]string{"--write-after", "500ms"}, "--write-after"},
		{[]string{"--interval", "10s", "--write-after", "20s"}, "--write-after"},
	}
	for _, c := range cases {
		dir := filepath.Join(t.TempDir(), "g")
		_, errOut, code := run(t, append([]string{"run", "--basedir", dir}, c.args...)...)
		if code != 2 || !strings.HasPrefix(errOut, "gatherer: error: "+c.flag+" ") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("%v: exit %d, stderr %q: want exit 2 and one line naming %s", c.args, code, errOut, c.flag)
		}
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("%v: the refused command created the basedir", c.args)
		}
	}
}

func TestRunLogsTheDurationsInUse(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "g")
	d := startRun(t, "--basedir", dir, "--interval", "2s")
	testutil.WaitFor(t, "the start line", 20*time.Second, func() bool {
		return strings.Contains(d.stderr.String(), "interval=2s timeout=2s write_after=2s")
	})
	d.stop(t)
	d = startRun(t, "--basedir", dir, "--interval", "90s", "--write-after", "3s")
	testutil.WaitFor(t, "the start line", 20*time.Second, func() bool {
		return strings.Contains(d.stderr.String(), "interval=1m30s timeout=30s write_after=3s")
	})
	d.stop(t)
}

// snapshotDir reads every file under dir, names relative to it.
func snapshotDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		files[rel] = b
		return nil
	})
	return files
}

func TestSecondGathererOnBasedirChangesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "g")
	if _, e, code := run(t, "create", "--basedir", dir, "--hostname", "127.0.0.1"); code != 0 {
		t.Fatal(e)
	}
	// A long interval: the running gatherer writes nothing while the
	// second one tries its luck.
	first := startRun(t, "run", "--basedir", dir, "--interval", "1h")
	testutil.WaitFor(t, "the first stats.json", 20*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(dir, "stats.json"))
		return err == nil
	})
	// A temp file as a write in progress leaves it: a second start used to
	// delete it before it failed to listen on the fixed port.
	tmp := filepath.Join(dir, ".stats.json.tmp-0123456789abcdef")
	os.WriteFile(tmp, []byte("{}"), 0o644)
	before := snapshotDir(t, dir)

	out, errOut, code := run(t, "run", "--basedir", dir, "--interval", "1s")
	lock := filepath.Join(dir, "gatherer.lock")
	if code == 0 || strings.Contains(out, "StatsGatherer:") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 ||
		!strings.Contains(errOut, lock) || !strings.Contains(errOut, "PID "+strconv.Itoa(first.cmd.Process.Pid)) {
		t.Fatalf("second gatherer: exit %d, stdout %q, stderr %q: want one line naming %s and PID %d", code, out, errOut, lock, first.cmd.Process.Pid)
	}
	after := snapshotDir(t, dir)
	if len(after) != len(before) {
		t.Errorf("files before %d, after %d", len(before), len(after))
	}
	for name, b := range before {
		if !bytes.Equal(after[name], b) {
			t.Errorf("%s changed or vanished", name)
		}
	}
	first.stop(t)
}

func TestTwoGatherersOnAnEmptyBasedirMakeOneKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "g")
	bin := testbin.Build(t, "gatherer")
	type proc struct {
		cmd    *exec.Cmd
		stdout *testutil.SyncBuffer
		stderr *testutil.SyncBuffer
	}
	exited := make(chan *proc, 2)
	var procs []*proc
	for range 2 {
		p := &proc{cmd: exec.Command(bin, "--basedir", dir, "--interval", "1s"), stdout: &testutil.SyncBuffer{}, stderr: &testutil.SyncBuffer{}}
		p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
		procs = append(procs, p)
	}
	for _, p := range procs {
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { p.cmd.Wait(); exited <- p }()
	}
	defer func() {
		for _, p := range procs {
			p.cmd.Process.Kill()
		}
	}()
	var refused *proc
	select {
	case refused = <-exited:
	case <-time.After(20 * time.Second):
		t.Fatal("both gatherers still run on one basedir")
	}
	winner := procs[0]
	if winner == refused {
		winner = procs[1]
	}
	if code := refused.cmd.ProcessState.ExitCode(); code == 0 || !strings.Contains(refused.stderr.String(), "gatherer.lock is locked by PID "+strconv.Itoa(winner.cmd.Process.Pid)) {
		t.Fatalf("the second gatherer: exit %d, stderr %q", code, refused.stderr)
	}
	if strings.Contains(refused.stdout.String(), "StatsGatherer:") {
		t.Error("the refused gatherer announced a furl")
	}
	testutil.WaitFor(t, "the winner's furl", 20*time.Second, func() bool {
		return strings.Contains(winner.stdout.String(), "StatsGatherer: ")
	})
	// The furl it printed is the one its key and furl file say.
	out, _, code := run(t, "furl", "--basedir", dir)
	if code != 0 || !strings.Contains(winner.stdout.String(), "StatsGatherer: "+strings.TrimSpace(out)) {
		t.Errorf("gatherer furl %q (exit %d), the winner printed %q", out, code, winner.stdout)
	}
	winner.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case p := <-exited:
		if p != winner || !p.cmd.ProcessState.Success() {
			t.Errorf("winner exit %v; stderr:\n%s", p.cmd.ProcessState, p.stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the winner did not stop")
	}
}
