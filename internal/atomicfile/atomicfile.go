// Package atomicfile replaces files so that a reader, or a crash, sees
// either the old contents or the new, never a mix and never nothing. It is
// the one implementation of the temp, fsync, rename, fsync-dir dance in
// capstats: the stats file, keys, furl files and basedir files all use it.
package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Temp files are named "." + the target's name + tempInfix + 16 hex digits,
// e.g. ".stats.json.tmp-0123456789abcdef", in the target's directory
// (rename is only atomic within one file system).
const tempInfix = ".tmp-"

// faultHook is the package's test seam (set through export_test.go): when
// set, it is called before each step of Write ("create", "write", "sync",
// "close", "rename", "syncdir") and makes that step fail with the error it
// returns. Nothing outside this package's tests can set it.
var faultHook func(step string) error

func fault(step string) error {
	if faultHook != nil {
		return faultHook(step)
	}
	return nil
}

// TempName returns a fresh temp file name for path.
func TempName(path string) (string, error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", err
	}
	dir, base := filepath.Split(path)
	return filepath.Join(dir, "."+base+tempInfix+hex.EncodeToString(rnd[:])), nil
}

// Write replaces path with data, mode perm: temp file in the same directory,
// fsync, rename, fsync the directory, so that after a crash path holds the
// old or the new content. On failure before the rename the temp file is
// removed and the old file left as it was.
//
// When path is a symbolic link, the file it points to is replaced (temp
// file and rename in the target's directory) and the link is left alone:
// an operator who links stats.json into a web root, say, means the target
// to be updated; renaming over the link would replace it with a regular
// file and leave the target stale for ever.
func Write(path string, data []byte, perm os.FileMode) (err error) {
	path, err = Resolve(path)
	if err != nil {
		return err
	}
	tmp, err := TempName(path)
	if err != nil {
		return err
	}
	if err := fault("create"); err != nil {
		return err
	}
	t, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			t.Close()
			os.Remove(tmp)
		}
	}()
	// The umask may have taken bits away, or (for secrets) we must be sure
	// none were added.
	if err := t.Chmod(perm); err != nil {
		return err
	}
	if err := fault("write"); err != nil {
		return err
	}
	if _, err := t.Write(data); err != nil {
		return err
	}
	if err := fault("sync"); err != nil {
		return err
	}
	if err := t.Sync(); err != nil {
		return err
	}
	if err := fault("close"); err != nil {
		return err
	}
	if err := t.Close(); err != nil {
		return err
	}
	if err := fault("rename"); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	// The new file is in place; make the rename itself durable.
	if err := fault("syncdir"); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// maxLinks bounds a chain of symbolic links, as the kernel's ELOOP does.
const maxLinks = 40

// Resolve follows path while it is a symbolic link and returns the path of
// the file it ends at, which need not exist. Any other path comes back
// unchanged.
func Resolve(path string) (string, error) {
	for range maxLinks {
		fi, err := os.Lstat(path)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			return path, nil
		}
		target, err := os.Readlink(path)
		if err != nil {
			return "", err
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(path), target)
		}
		path = target
	}
	return "", fmt.Errorf("%s: too many levels of symbolic links", path)
}

// CleanTempOf removes the temp files Write leaves behind for path (after
// following links) when the process dies mid-write, and only those: for a
// target outside the caller's own directory.
func CleanTempOf(path string) error {
	path, err := Resolve(path)
	if err != nil {
		return err
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("clean temp files: %w", err)
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !IsTempName(name) || !strings.HasPrefix(name, "."+base+tempInfix) || len(name) != len("."+base+tempInfix)+16 {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("clean temp files: %w", errors.Join(errs...))
	}
	return nil
}

// SyncDir makes a rename in dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, fs.ErrInvalid) {
		// Some file systems cannot fsync a directory; nothing more to do.
		return nil
	}
	return err
}

// IsTempName reports whether name is one of Write's temp files.
func IsTempName(name string) bool {
	i := strings.LastIndex(name, tempInfix)
	if !strings.HasPrefix(name, ".") || i < 2 {
		return false
	}
	suffix := name[i+len(tempInfix):]
	if len(suffix) != 16 {
		return false
	}
	for _, c := range []byte(suffix) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// CleanTemp removes the temp files that Write leaves behind when the
// process dies mid-write. Call it at start-up, before writing. Other files
// are left alone.
func CleanTemp(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("clean temp files: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if !e.Type().IsRegular() || !IsTempName(e.Name()) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("clean temp files: %w", errors.Join(errs...))
	}
	return nil
}
