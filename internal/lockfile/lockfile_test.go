package lockfile

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestSecondAcquireRefusedWithPID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	l, err := Acquire(path)
	if err != nil {
		t.Fatal(err)
	}
	// flock locks belong to the open file description, so a second open in
	// this process conflicts just as another process would.
	_, err = Acquire(path)
	var held *HeldError
	if !errors.As(err, &held) {
		t.Fatalf("second Acquire: %v, want a HeldError", err)
	}
	if held.PID != os.Getpid() || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), strconv.Itoa(os.Getpid())) {
		t.Errorf("error %q (pid %d): want the path and PID %d", err, held.PID, os.Getpid())
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	l2, err := Acquire(path)
	if err != nil {
		t.Fatalf("after Release: %v", err)
	}
	l2.Release()
}

func TestLockHeldByAnotherProcess(t *testing.T) {
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("no flock(1)")
	}
	path := filepath.Join(t.TempDir(), "x.lock")
	os.WriteFile(path, []byte("4242\n"), 0o644)
	cmd := exec.Command("flock", path, "sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for i := 0; ; i++ {
		l, err := Acquire(path)
		if err == nil {
			// flock(1) has not got there yet.
			l.Release()
			os.WriteFile(path, []byte("4242\n"), 0o644)
		}
		var held *HeldError
		if errors.As(err, &held) {
			if held.PID != 4242 {
				t.Errorf("PID %d, want the 4242 in the file", held.PID)
			}
			break
		}
		if i == 200 {
			t.Fatalf("flock(1) never held the lock: %v", err)
		}
		exec.Command("sleep", "0.05").Run()
	}
}
