// Package atomicfile replaces files so that a reader, or a crash, sees
// either the old contents or the new, never a mix and never nothing.
package atomicfile

import (
	"os"
	"path/filepath"
)

// TempPrefix starts the name of every temporary file this package makes, so
// that leftovers from a crash can be recognised and removed.
const TempPrefix = ".tmp-"

// Write replaces path with data: temp file in the same directory, fsync,
// rename, fsync the directory. On failure the old file is left as it was.
func Write(path string, data []byte, perm os.FileMode) error {
	return WriteFunc(path, perm, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}

// WriteFunc is Write with the contents produced by fill.
func WriteFunc(path string, perm os.FileMode, fill func(*os.File) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, TempPrefix+base+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if err = fill(f); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	return SyncDir(dir)
}

// SyncDir makes a rename in dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// CleanTemp removes temporary files that a crash left in dir for the file
// named base.
func CleanTemp(dir, base string) error {
	matches, err := filepath.Glob(filepath.Join(dir, TempPrefix+base+"-*"))
	if err != nil {
		return err
	}
	for _, m := range matches {
		if err := os.Remove(m); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}
