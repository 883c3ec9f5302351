//go:build linux

package shm

import (
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Not FUTEX_PRIVATE_FLAG: the word is shared between processes.
const (
	futexWait = 0
	futexWake = 1
)

type futexBell struct{ word *uint32 }

func newFutexBell(word *uint32) (Doorbell, error) { return futexBell{word}, nil }

func (b futexBell) Wait(old uint32, timeout time.Duration) error {
	var ts *unix.Timespec
	if timeout >= 0 {
		t := unix.NsecToTimespec(int64(timeout))
		ts = &t
	}
	_, _, e := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(b.word)), futexWait, uintptr(old),
		uintptr(unsafe.Pointer(ts)), 0, 0)
	switch e {
	case 0, unix.EAGAIN, unix.EINTR, unix.ETIMEDOUT:
		return nil
	}
	return os.NewSyscallError("futex", e)
}

func (b futexBell) Ring() error {
	_, _, e := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(b.word)), futexWake, 1<<31-1, 0, 0, 0)
	if e != 0 {
		return os.NewSyscallError("futex", e)
	}
	return nil
}

func (futexBell) Close() error { return nil }
