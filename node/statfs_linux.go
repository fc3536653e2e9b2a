package node

import "syscall"

// statfs reports on the file system holding dir. Sizes are in units of the
// fragment size, as statvfs's f_frsize in the original.
func statfs(dir string) (diskStats, error) {
	var s syscall.Statfs_t
	if err := syscall.Statfs(dir, &s); err != nil {
		return diskStats{}, err
	}
	unit := s.Frsize
	if unit <= 0 {
		unit = s.Bsize
	}
	return diskStats{
		Total:          int64(s.Blocks) * unit,
		FreeForRoot:    int64(s.Bfree) * unit,
		FreeForNonroot: int64(s.Bavail) * unit,
	}, nil
}
