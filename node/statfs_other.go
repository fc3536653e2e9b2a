//go:build !linux

package node

import "errors"

func statfs(dir string) (diskStats, error) {
	return diskStats{}, errors.New("statfs is only implemented on Linux")
}
