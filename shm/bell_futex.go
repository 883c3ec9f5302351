//go:build linux

package shm

import (
	"errors"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Not FUTEX_PRIVATE_FLAG: the word is shared between processes.
const (
	futexWait       = 0
	futexWake       = 1
	futexWaitBitset = 9
	futexWakeBitset = 10
	futexAnySet     = 1<<32 - 1 // FUTEX_BITSET_MATCH_ANY
)

type futexBell struct {
	word *uint32
	set  uint32
}

func newFutexBell(word *uint32) (Doorbell, error) { return futexBell{word, futexAnySet}, nil }

func newFutexBellSet(word *uint32, set uint32) (Doorbell, error) {
	if set == 0 {
		return nil, errors.New("shm: futex bell of an empty set")
	}
	return futexBell{word, set}, nil
}

func (b futexBell) Wait(old uint32, timeout time.Duration) error {
	var ts *unix.Timespec
	op := uintptr(futexWait)
	if b.set != futexAnySet {
		// FUTEX_WAIT_BITSET takes a deadline on the monotonic clock.
		op = futexWaitBitset
		if timeout >= 0 {
			var now unix.Timespec
			if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &now); err != nil {
				return os.NewSyscallError("clock_gettime", err)
			}
			t := unix.NsecToTimespec(now.Nano() + int64(timeout))
			ts = &t
		}
	} else if timeout >= 0 {
		t := unix.NsecToTimespec(int64(timeout))
		ts = &t
	}
	_, _, e := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(b.word)), op, uintptr(old),
		uintptr(unsafe.Pointer(ts)), 0, uintptr(b.set))
	switch e {
	case 0, unix.EAGAIN, unix.EINTR, unix.ETIMEDOUT:
		return nil
	}
	return os.NewSyscallError("futex", e)
}

func (b futexBell) Ring() error {
	op := uintptr(futexWake)
	if b.set != futexAnySet {
		op = futexWakeBitset
	}
	_, _, e := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(b.word)), op, 1<<31-1, 0, 0, uintptr(b.set))
	if e != 0 {
		return os.NewSyscallError("futex", e)
	}
	return nil
}

func (futexBell) Close() error { return nil }
