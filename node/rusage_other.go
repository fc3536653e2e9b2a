//go:build !unix

package node

import (
	"errors"
	"time"
)

func processCPUTime() (time.Duration, error) {
	return 0, errors.New("process CPU time is not available on this platform")
}
