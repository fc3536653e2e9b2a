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

// keepOwner gives paths the owner of dir when run as root, so that an
// operator's sudo leaves no file the gatherer's own user cannot read or
// replace (a root-owned 0600 furl file would stop it at its next start).
func keepOwner(dir string, paths ...string) {
	if os.Getuid() != 0 {
		return
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return
	}
	for _, p := range paths {
		os.Lchown(p, int(st.Uid), int(st.Gid))
	}
}
