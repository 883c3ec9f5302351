//go:build darwin

package instance

import "golang.org/x/sys/unix"

// sZomb is SZOMB of <sys/proc.h>: exited, not yet reaped.
const sZomb = 5

// zombie reports whether pid has exited and waits for its parent to reap
// it, by the kern.proc.pid sysctl. Unreadable, it is taken for a live
// process.
func zombie(pid int) bool {
	kp, err := unix.SysctlKinfoProc("kern.proc.pid", pid)
	return err == nil && kp.Proc.P_stat == sZomb
}
