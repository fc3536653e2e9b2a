//go:build !linux

package node

import "errors"

func statfs(dir string) (DiskStats, error) {
	return DiskStats{}, errors.New("statfs is only implemented on Linux")
}
