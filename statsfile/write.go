package statsfile

import (
	"fmt"
	"sync"
	"sync/atomic"

	"capstats/internal/atomicfile"
)

var bufPool sync.Pool // *[]byte, the previous round's encoding buffer

// lastSize is the size of the previous file: when the pool has lost its
// buffer to a garbage collection (it does, between rounds a minute apart),
// the new one starts at that size instead of growing to it by doubling.
var lastSize atomic.Int64

// WriteFile replaces the file at path with f, atomically (see
// internal/atomicfile): after a crash path holds either the old or the new
// content, never a mix or nothing. The file is mode 0644, since munin-node
// runs plugins as an unprivileged user. On any failure the old file is left
// as it was.
func WriteFile(path string, f *File) error {
	bp, _ := bufPool.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, 0, lastSize.Load()+lastSize.Load()/8)
		bp = &b
	}
	*bp = f.AppendJSON((*bp)[:0])
	lastSize.Store(int64(len(*bp)))
	err := atomicfile.Write(path, *bp, 0o644)
	bufPool.Put(bp)
	if err != nil {
		return fmt.Errorf("write stats file %s: %w", path, err)
	}
	return nil
}

// CleanTemp removes the temp files that WriteFile leaves behind when the
// process dies mid-write. Call it at start-up, before writing.
func CleanTemp(dir string) error { return atomicfile.CleanTemp(dir) }
