//go:build unix

package tub

import "syscall"

// RaiseFileLimit lifts the soft RLIMIT_NOFILE to the hard limit, as a
// process that accepts many connections wants at start, and returns the
// soft limit now in force (0 if it cannot be read). A listener keeps
// Options.FDReserve descriptors of it free.
func RaiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur < lim.Max {
		want := lim
		want.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
			return lim.Cur, err
		}
		lim = want
	}
	return lim.Cur, nil
}

// softFileLimit returns the soft RLIMIT_NOFILE, or 0 if unknown.
func softFileLimit() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur >= 1<<62 {
		return 0
	}
	return lim.Cur
}
