// Package futex makes the futex(2) calls of package shm's doorbell and of a
// secondary's wait for its reply.
package futex

import (
	"math"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Not FUTEX_PRIVATE_FLAG: the word is shared between processes.
const (
	opWait       = 0
	opWake       = 1
	opWaitBitset = 9
	opWakeBitset = 10
)

// AnySet is the set of every waiter (FUTEX_BITSET_MATCH_ANY): a wait in it
// is woken by any ring, and a ring of it wakes every waiter.
const AnySet = 1<<32 - 1

// MaxHeld is the longest WaitHeld sleeps.
const MaxHeld = time.Millisecond

// Wait sleeps while *word is old, as a member of set, until a ring of a set
// that shares a bit with it, or for at most timeout (negative: no limit).
// It may return early; callers re-read the word.
func Wait(word *uint32, old, set uint32, timeout time.Duration) error {
	return wait(word, old, set, timeout, false)
}

// WaitHeld is Wait in AnySet for at most min(timeout, MaxHeld), keeping the
// goroutine's processor (P) meanwhile, as a goroutine that computes does:
// Go's runtime is not told of the sleep, so it neither hands the processor
// to another thread nor, when the wait ends, has to get one back. It is
// for short waits whose end is near: other goroutines of the process wait
// as long on a busy processor anyway, and a collection that stops them all
// ends the sleep at once, since the runtime's preemption signal interrupts
// a timed wait (EINTR; SA_RESTART does not restart one).
func WaitHeld(word *uint32, old uint32, timeout time.Duration) error {
	return wait(word, old, AnySet, max(0, min(timeout, MaxHeld)), true)
}

func wait(word *uint32, old, set uint32, timeout time.Duration, held bool) error {
	var ts *unix.Timespec
	op := uintptr(opWait)
	if set != AnySet {
		// FUTEX_WAIT_BITSET takes a deadline on the monotonic clock.
		op = opWaitBitset
		if timeout >= 0 {
			var now unix.Timespec
			if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &now); err != nil {
				return os.NewSyscallError("clock_gettime", err)
			}
			if timeout <= math.MaxInt64-time.Duration(now.Nano()) {
				t := unix.NsecToTimespec(now.Nano() + int64(timeout))
				ts = &t
			} // else past the clock's range: no limit
		}
	} else if timeout >= 0 {
		t := unix.NsecToTimespec(int64(timeout))
		ts = &t
	}
	var e unix.Errno
	if held {
		_, _, e = unix.RawSyscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(word)), op, uintptr(old),
			uintptr(unsafe.Pointer(ts)), 0, uintptr(set))
	} else {
		_, _, e = unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(word)), op, uintptr(old),
			uintptr(unsafe.Pointer(ts)), 0, uintptr(set))
	}
	switch e {
	case 0, unix.EAGAIN, unix.EINTR, unix.ETIMEDOUT:
		return nil
	}
	return os.NewSyscallError("futex", e)
}

// Wake wakes the waiters on word whose set shares a bit with set.
func Wake(word *uint32, set uint32) error {
	op := uintptr(opWake)
	if set != AnySet {
		op = opWakeBitset
	}
	_, _, e := unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(word)), op, 1<<31-1, 0, 0, uintptr(set))
	if e != 0 {
		return os.NewSyscallError("futex", e)
	}
	return nil
}
