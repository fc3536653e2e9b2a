package atomicfile

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
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

// untouched checks that dir holds only path, with the old contents.
func untouched(t *testing.T, dir, path string, old []byte) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{filepath.Base(path)}) {
		t.Errorf("dir holds %v after a failed write, want only %s", names, filepath.Base(path))
	}
	cur, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cur, old) {
		t.Errorf("a failed write changed the old file")
	}
}

// A failure at any step before the rename leaves the old file as it was
// and no temp file behind; one after it leaves the new file complete.
func TestWriteFailureAtEveryStep(t *testing.T) {
	old, new := []byte("old contents\n"), []byte("new contents\n")
	for _, step := range []string{"create", "write", "sync", "close", "rename"} {
		t.Run(step, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "stats.json")
			if err := os.WriteFile(path, old, 0o644); err != nil {
				t.Fatal(err)
			}
			injected := errors.New("injected failure")
			SetFaultHook(t, func(s string) error {
				if s == step {
					return injected
				}
				return nil
			})
			if err := Write(path, new, 0o644); !errors.Is(err, injected) {
				t.Errorf("err = %v, want the injected failure", err)
			}
			untouched(t, dir, path, old)
		})
	}
	t.Run("syncdir", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "stats.json")
		SetFaultHook(t, func(s string) error {
			if s == "syncdir" {
				return errors.New("injected")
			}
			return nil
		})
		if err := Write(path, new, 0o644); err == nil {
			t.Error("a failed directory fsync was not reported")
		}
		untouched(t, dir, path, new)
	})
}

func TestWriteThroughSymlink(t *testing.T) {
	base, web := t.TempDir(), t.TempDir()
	target := filepath.Join(web, "stats.json")
	os.WriteFile(target, []byte("old"), 0o644)
	link := filepath.Join(base, "stats.json")
	// A relative link, through a second link: both are followed.
	rel, _ := filepath.Rel(base, filepath.Join(web, "alias.json"))
	os.Symlink("stats.json", filepath.Join(web, "alias.json"))
	if err := os.Symlink(rel, link); err != nil {
		t.Fatal(err)
	}
	if err := Write(link, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link was replaced: %v %v", fi.Mode(), err)
	}
	if fi, err := os.Lstat(filepath.Join(web, "alias.json")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the second link was replaced: %v", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "new" {
		t.Errorf("target holds %q, want new", b)
	}
	for _, d := range []string{base, web} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if IsTempName(e.Name()) {
				t.Errorf("temp file %s left in %s", e.Name(), d)
			}
		}
	}
	// A dangling link: the target is created.
	os.Remove(target)
	if err := Write(link, []byte("again"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); string(b) != "again" {
		t.Errorf("target holds %q", b)
	}
	// A loop is an error, not a hang.
	loop := filepath.Join(base, "loop")
	os.Symlink("loop", loop)
	if err := Write(loop, []byte("x"), 0o644); err == nil {
		t.Error("a link loop was written")
	}
}

func TestCleanTempOfOnlyThatFile(t *testing.T) {
	base, web := t.TempDir(), t.TempDir()
	target := filepath.Join(web, "stats.json")
	link := filepath.Join(base, "stats.json")
	os.Symlink(target, link)
	mine, _ := TempName(target)
	other, _ := TempName(filepath.Join(web, "other.json"))
	for _, p := range []string{mine, other} {
		os.WriteFile(p, nil, 0o644)
	}
	if err := CleanTempOf(link); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(mine); err == nil {
		t.Error("the stats file's temp file is still there")
	}
	if _, err := os.Stat(other); err != nil {
		t.Error("another file's temp file was removed")
	}
}
