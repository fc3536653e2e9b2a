// Package lockfile keeps two daemons off one basedir: each takes an
// exclusive flock on a file there before it reads or writes anything else,
// and a second one is refused with the PID of the first.
package lockfile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

// Lock is a held lock. The kernel drops it when the process ends, however
// it ends, so a crash never leaves a stale lock behind.
type Lock struct {
	f *os.File
}

// HeldError says another process holds the lock.
type HeldError struct {
	Path string
	PID  int // 0 when the holder has not written its PID yet
}

func (e *HeldError) Error() string {
	if e.PID == 0 {
		return fmt.Sprintf("%s is locked by another process: is it already running on this basedir?", e.Path)
	}
	return fmt.Sprintf("%s is locked by PID %d: is it already running on this basedir?", e.Path, e.PID)
}

// Acquire takes the lock on path, creating the file (mode 0644) if needed,
// and writes this process's PID into it. It never waits: a lock held by
// another process is a *HeldError.
func Acquire(path string) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock file: %w", err)
	}
	if err := flock(f); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			// A holder that has just started may not have written its PID.
			pid := readPID(path)
			for i := 0; pid == 0 && i < 20; i++ {
				time.Sleep(10 * time.Millisecond)
				pid = readPID(path)
			}
			return nil, &HeldError{Path: path, PID: pid}
		}
		return nil, fmt.Errorf("lock file %s: %w", path, err)
	}
	// Only the holder writes. The PID is padded to a fixed width and
	// written over the old one in place, so that a refused process reading
	// meanwhile sees one PID or the other, never an empty file between a
	// truncate and a write.
	line := fmt.Sprintf("%-20d\n", os.Getpid())
	if _, err := f.WriteAt([]byte(line), 0); err == nil {
		f.Truncate(int64(len(line)))
	}
	return &Lock{f: f}, nil
}

func flock(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err != syscall.EINTR {
			return err
		}
	}
}

func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil || len(b) > 32 {
		return 0
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// Release drops the lock. The file stays: removing it would let a third
// process lock a new file while a second still waits on the old one.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
