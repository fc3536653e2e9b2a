package gatherer

import (
	"fmt"
	"net"
	"os"
	"syscall"
)

// peerAllowed admits only the gatherer's own user and root, whatever the
// socket's mode says.
func peerAllowed(c *net.UnixConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if credErr != nil {
		return credErr
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Getuid() {
		return fmt.Errorf("uid %d is neither the gatherer's user nor root", cred.Uid)
	}
	return nil
}
