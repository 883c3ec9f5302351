//go:build linux

package instance

import (
	"errors"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/go-instance/instance/internal/futex"
	"github.com/go-instance/instance/shm"
	"golang.org/x/sys/unix"
)

// openerBell is the doorbell of the idle Serve calls of a futex primary:
// an inotify watch of the lock file, rung by a one-byte read of the file
// (IN_ACCESS), which also wakes them when a launch opens the file
// (IN_OPEN), before it has checked, locked and mapped it and written its
// message. A Serve woken so watches the doorbell's word for a moment
// rather than sleep again: the wake-up of its idle processor, most of a
// handoff's time on some machines (80 µs on one VM), then overlaps the
// launch's own work instead of following its ring.
//
// One Serve at a time waits on the watch (Instance.watched): a second
// could read the event that is the first's wake-up between the first's
// look at the word and its sleep, which a futex, checking the word as it
// sleeps, cannot lose. The others wait in the futex's Serve set, which a
// ring also wakes, as do all of them when the watch cannot be made (no
// inotify instance left, no /proc).
type openerBell struct {
	word   *uint32
	lockFD int
	in     int // the inotify descriptor of a waiter, or -1
}

// Spinning after an opening costs a Serve that keeps being woken (by the
// launches of a storm, say) processor time that the launches need: only
// one that slept this long watches. The watch is short: a launch rings 10
// to 30 µs after its opening (on the two VMs measured), and the kernel
// often wakes the Serve on the launch's own processor, where the launch
// cannot ring until the watch ends, or on a busy machine, where it takes
// another task's time. A watch of 100 µs was then a handoff's slowest part.
const (
	openerWatch    = 30 * time.Microsecond // how long a Serve watches after an opening
	openerMinSleep = 50 * time.Microsecond // how long it must have slept first
)

// Set by tests: testHookOpened runs when an opening of the lock file has
// woken a Serve that then watches the word; testHookWatchWaits, with +1
// and -1, as a Wait on the watch begins and ends.
var (
	testHookOpened     func()
	testHookWatchWaits func(int)
)

// serveBell returns the doorbell of idle Serve calls for the futex
// doorbell's word, which lockFD's region holds: with wait, an inotify
// watch of the lock file, or the futex set if none can be made.
func serveBell(word *uint32, lockFD int, wait bool) (shm.Doorbell, error) {
	b := &openerBell{word: word, lockFD: lockFD, in: -1}
	if !wait {
		return b, nil
	}
	in, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return shm.NewFutexBellSet(word, bellServe)
	}
	// Through the descriptor: the file at the lock path may already be
	// another one.
	if _, err := unix.InotifyAddWatch(in, "/proc/self/fd/"+strconv.Itoa(lockFD), unix.IN_OPEN|unix.IN_ACCESS); err != nil {
		unix.Close(in)
		return shm.NewFutexBellSet(word, bellServe)
	}
	b.in = in
	return b, nil
}

// drain reads the events queued and reports whether any was an opening.
func (b *openerBell) drain() (opened bool) {
	var buf [1024]byte
	for {
		n, err := unix.Read(b.in, buf[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return opened
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			opened = opened || ev.Mask&unix.IN_OPEN != 0
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
}

// Wait sleeps until the word moves from old, the bell rings or timeout
// passes (negative: no limit). Events queued before it are stale: a ring
// among them moved the word first, which it looks at after reading them.
func (b *openerBell) Wait(old uint32, timeout time.Duration) error {
	if b.in < 0 {
		return &os.PathError{Op: "wait", Path: "inotify", Err: errors.New("bell opened to ring only")}
	}
	if testHookWatchWaits != nil {
		testHookWatchWaits(1)
		defer testHookWatchWaits(-1)
	}
	var deadline time.Time
	if timeout >= 0 {
		deadline = time.Now().Add(timeout)
	}
	b.drain()
	for {
		if atomic.LoadUint32(b.word) != old {
			return nil
		}
		ms := -1
		if timeout >= 0 {
			left := time.Until(deadline)
			if left <= 0 {
				return nil
			}
			ms = int(min(millis(left), 1<<31-1))
		}
		slept := time.Now()
		fds := []unix.PollFd{{Fd: int32(b.in), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("poll", err)
		}
		if n == 0 {
			return nil
		}
		opened := b.drain()
		if atomic.LoadUint32(b.word) != old || !opened {
			return nil // a ring, or something else read the file: look
		}
		if time.Since(slept) < openerMinSleep {
			continue
		}
		if testHookOpened != nil {
			testHookOpened()
		}
		for end := time.Now().Add(openerWatch); time.Now().Before(end); runtime.Gosched() {
			if atomic.LoadUint32(b.word) != old {
				return nil
			}
		}
		// The launch that opened the file has not rung (yet): sleep again.
	}
}

// millis rounds d up to whole milliseconds, for poll.
func millis(d time.Duration) int64 { return int64((d + time.Millisecond - 1) / time.Millisecond) }

// Ring wakes the Serve calls: those in the futex set, and, by a one-byte
// read of the lock file, those watching it. The word must have moved
// first (see ringRegion).
func (b *openerBell) Ring() error {
	err := futex.Wake(b.word, bellServe)
	var one [1]byte
	for {
		_, rerr := unix.Pread(b.lockFD, one[:], 0)
		if rerr != unix.EINTR {
			if rerr != nil && err == nil {
				err = os.NewSyscallError("pread", rerr)
			}
			return err
		}
	}
}

func (b *openerBell) Close() error {
	if b.in < 0 {
		return nil
	}
	err := unix.Close(b.in)
	b.in = -1
	if err != nil {
		return os.NewSyscallError("close", err)
	}
	return nil
}
