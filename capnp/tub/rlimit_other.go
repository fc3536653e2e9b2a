//go:build !unix

package tub

// RaiseFileLimit does nothing where there is no RLIMIT_NOFILE.
func RaiseFileLimit() (uint64, error) { return 0, nil }

func softFileLimit() uint64 { return 0 }
