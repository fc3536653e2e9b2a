//go:build unix

package node

import (
	"os"
	"syscall"
)

// ownedByMe reports whether the process's effective user owns the file.
func ownedByMe(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Geteuid()
}
