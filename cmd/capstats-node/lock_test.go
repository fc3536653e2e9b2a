package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"capstats/internal/testbin"
)

func TestSecondNodeOnBasedirRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	first := start(t, testbin.Build(t, "capstats-node"), "--basedir", dir)
	first.waitLog(t, `msg="node running"`)
	key, err := os.ReadFile(filepath.Join(dir, "private", "node.pem"))
	if err != nil {
		t.Fatal(err)
	}
	stderr, code := runOnce(t, "--basedir", dir)
	checkOneLineError(t, stderr, code, filepath.Join(dir, "node.lock"), "PID "+strconv.Itoa(first.cmd.Process.Pid))
	if again, _ := os.ReadFile(filepath.Join(dir, "private", "node.pem")); !bytes.Equal(again, key) {
		t.Error("the refused node changed the key")
	}
	first.stopWith(t, os.Interrupt)
}

func TestTwoNodesOnAnEmptyBasedirMakeOneKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	bin := testbin.Build(t, "capstats-node")
	a := start(t, bin, "--basedir", dir)
	b := start(t, bin, "--basedir", dir)
	// One of them runs; the other exits with the lock error.
	var running, refused *proc
	select {
	case err := <-a.done:
		a.done <- err
		running, refused = b, a
	case err := <-b.done:
		b.done <- err
		running, refused = a, b
	case <-time.After(20 * time.Second):
		t.Fatalf("both nodes still running on one basedir:\n%s\n%s", a.stderr, b.stderr)
	}
	running.waitLog(t, `msg="node running"`)
	checkOneLineError(t, refused.stderr.String(), refused.cmd.ProcessState.ExitCode(), "node.lock", "PID "+strconv.Itoa(running.cmd.Process.Pid))
	running.stopWith(t, os.Interrupt)
}
