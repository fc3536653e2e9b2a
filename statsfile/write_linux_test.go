package statsfile

import (
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runHelper runs this test binary as a child in helper mode.
func runHelper(t *testing.T, mode string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestHelperProcess$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), "STATSFILE_TEST_HELPER="+mode)
	cmd.WaitDelay = 10 * time.Second
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	timer := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	defer timer.Stop()
	err := cmd.Wait()
	return out.String(), err
}

// TestHelperProcess is not a test: it is the child of runHelper.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv("STATSFILE_TEST_HELPER")
	if mode == "" {
		return
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	switch mode {
	case "write-fsize":
		signal.Ignore(syscall.SIGXFSZ)
		lim := syscall.Rlimit{Cur: 16, Max: 16}
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
			os.Stdout.WriteString("setrlimit: " + err.Error() + "\n")
			os.Exit(2)
		}
		err := WriteFile(args[0], sample())
		if err == nil {
			os.Stdout.WriteString("no error\n")
		} else {
			os.Stdout.WriteString(err.Error() + "\n")
		}
		os.Exit(0)
	case "write-as-nobody":
		// Drop root, which ignores directory permissions.
		if err := syscall.Setgid(65534); err != nil {
			os.Stdout.WriteString("setgid: " + err.Error() + "\n")
			os.Exit(2)
		}
		if err := syscall.Setuid(65534); err != nil {
			os.Stdout.WriteString("setuid: " + err.Error() + "\n")
			os.Exit(2)
		}
		if err := WriteFile(args[0], sample()); err == nil {
			os.Stdout.WriteString("no error\n")
		} else {
			os.Stdout.WriteString(err.Error() + "\n")
		}
		os.Exit(0)
	}
	os.Exit(3)
}

func TestWriteFileFailsWhenWriteFails(t *testing.T) {
	// A child process lowers RLIMIT_FSIZE below the new file's size, so
	// write(2) really fails (EFBIG), even as root.
	dir := t.TempDir()
	path := filepath.Join(dir, "stats.json")
	old := []byte(originalJSON)
	if err := os.WriteFile(path, old, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runHelper(t, "write-fsize", path)
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	if !strings.Contains(out, "file too large") || !strings.Contains(out, path) {
		t.Errorf("helper reported %q, want a 'file too large' error naming %s", out, path)
	}
	checkUntouched(t, dir, old)
}

func TestWriteFileIntoReadOnlyDir(t *testing.T) {
	// Not t.TempDir: its parent is 0700, and the writer may have to be
	// "nobody" (root ignores directory permissions).
	dir, err := os.MkdirTemp("", "statsfile-ro-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	defer os.Chmod(dir, 0o755)
	path := filepath.Join(dir, "stats.json")
	old := []byte(originalJSON)
	if err := os.WriteFile(path, old, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	var msg string
	if os.Geteuid() == 0 {
		out, err := runHelper(t, "write-as-nobody", path)
		if err != nil {
			t.Fatalf("helper: %v\n%s", err, out)
		}
		msg = out
	} else if err := WriteFile(path, sample()); err != nil {
		msg = err.Error()
	}
	if !strings.Contains(msg, "permission denied") || !strings.Contains(msg, path) {
		t.Errorf("write into a read-only dir: %q, want 'permission denied' naming %s", msg, path)
	}
	checkUntouched(t, dir, old)
}
