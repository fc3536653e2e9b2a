package statsfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Temp files are named "." + the stats file's name + tempInfix + 16 hex
// digits, e.g. ".stats.json.tmp-0123456789abcdef", in the stats file's
// directory (rename is only atomic within one file system).
const tempInfix = ".tmp-"

// faultHook, when set by tests, is called before each step of WriteFile
// ("create", "write", "sync", "close", "rename", "syncdir") and makes that
// step fail with the error it returns.
var faultHook func(step string) error

func fault(step string) error {
	if faultHook != nil {
		return faultHook(step)
	}
	return nil
}

var bufPool sync.Pool // *[]byte, the previous round's encoding buffer

// WriteFile replaces the file at path with f, atomically: it writes a temp
// file in the same directory (mode 0644), fsyncs it, renames it over path
// and fsyncs the directory, so that after a crash path holds either the old
// or the new content, never a mix or nothing. On any failure the temp file
// is removed and the old file is left as it was.
func WriteFile(path string, f *File) error {
	bp, _ := bufPool.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	*bp = f.AppendJSON((*bp)[:0])
	err := writeAtomic(path, *bp)
	bufPool.Put(bp)
	return err
}

func tempName(path string) (string, error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", err
	}
	dir, base := filepath.Split(path)
	return filepath.Join(dir, "."+base+tempInfix+hex.EncodeToString(rnd[:])), nil
}

func writeAtomic(path string, data []byte) (err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("write stats file %s: %w", path, err)
		}
	}()
	tmp, err := tempName(path)
	if err != nil {
		return err
	}
	if err := fault("create"); err != nil {
		return err
	}
	t, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
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
	// The umask may have taken bits away; the file is meant to be world
	// readable (munin-node runs plugins as an unprivileged user).
	if err := t.Chmod(0o644); err != nil {
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
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
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

// isTempName reports whether name is one of WriteFile's temp files.
func isTempName(name string) bool {
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

// CleanTemp removes the temp files that WriteFile leaves behind when the
// process dies mid-write (".<name>.tmp-<16 hex digits>" in dir). Call it at
// start-up, before writing. Other files are left alone.
func CleanTemp(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("clean stats temp files: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if !e.Type().IsRegular() || !isTempName(e.Name()) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("clean stats temp files: %w", errors.Join(errs...))
	}
	return nil
}
