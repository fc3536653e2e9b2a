//go:build unix

package main

import (
	"fmt"
	"os"
	"syscall"
)

// raiseNofile lifts the soft limit on open files to the hard limit: every
// provider connection is a file descriptor.
func raiseNofile(want int) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			fmt.Fprintf(os.Stderr, "loadgen: raising RLIMIT_NOFILE: %v\n", err)
		}
	}
	if uint64(want) > lim.Cur {
		fmt.Fprintf(os.Stderr, "loadgen: RLIMIT_NOFILE is %d, fewer than the %d descriptors wanted; raise the hard limit (ulimit -Hn)\n", lim.Cur, want)
	}
}
