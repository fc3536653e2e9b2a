package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteSetsModeAndReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secret")
	for _, content := range []string{"one", "two"} {
		if err := Write(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(path)
		if string(b) != content {
			t.Fatalf("content %q, want %q", b, content)
		}
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %o, want 600", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("dir holds %d entries, want 1", len(entries))
	}
}

func TestCleanTempRemovesOnlyTempFiles(t *testing.T) {
	dir := t.TempDir()
	tmp, _ := TempName(filepath.Join(dir, "stats.json"))
	keep := []string{"stats.json", ".stats.json.tmp-short", "notes.tmp-0123456789abcdef"}
	for _, n := range append(keep, filepath.Base(tmp)) {
		os.WriteFile(filepath.Join(dir, n), nil, 0o644)
	}
	if err := CleanTemp(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("temp file %s survived", tmp)
	}
	for _, n := range keep {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			t.Errorf("CleanTemp removed %s", n)
		}
	}
}
