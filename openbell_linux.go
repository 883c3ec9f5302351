package instance

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/go-instance/instance/handoff"
	"github.com/go-instance/instance/shm"
	"golang.org/x/sys/unix"
)

// openBell is the doorbell of idle Serve calls with the bellOpen kind: an
// inotify instance that watches the lock file for being opened or read. A
// launch opens the lock file some 15 to 30 µs before it rings (it still
// checks and locks the file, maps the region and writes its message), so
// the Serve call that wakes at the opening is awake when the ring comes:
// on a machine whose idle processors halt, as a virtual machine's do,
// waking one takes about as long, and the launch no longer waits for it.
// Woken by an opening, the Serve call watches the doorbell's word for up to
// openSpin. A ring is a read of one byte of the lock file (IN_ACCESS),
// which a sender makes only while the region's asleep word says that the
// Serve call sleeps in poll: a system call that costs a tenth of a
// handoff, for nothing when the Serve call is awake (under load, most of
// the time).
type openBell struct {
	word   *uint32
	asleep *uint32 // handoff.ServeAsleepWordOf
	lock   int     // the lock file, which Ring reads
	fd     int     // the inotify instance, non-blocking
}

// openSpin bounds the watch after an opening. In the bench's loop the ring
// came a median of 4 µs into the watch, and 25 µs at the 90th percentile;
// a launch that rings later wakes the Serve call with its ring.
const openSpin = 100 * time.Microsecond

// spinOnOpen: on a single processor, the watch would only keep the launch
// from running.
var spinOnOpen = runtime.NumCPU() > 1

// serveOnOpen returns the bellOpen kind's bell of the idle Serve calls of
// region: the watch for the primary (wait), the ring for a secondary.
func (f *files) serveOnOpen(region []byte, wait bool) (shm.Doorbell, error) {
	word, asleep := handoff.BellWordOf(region), handoff.ServeAsleepWordOf(region)
	if !wait {
		return &lockFileBell{lock: f.lockFD(), asleep: asleep}, nil
	}
	b, err := newOpenBell(word, asleep, f.lockFD(), f.held.path)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// openBellEvents are the watched events: openings and the rings (reads).
// Tests take the openings out, to see the rings alone.
var openBellEvents uint32 = unix.IN_OPEN | unix.IN_ACCESS

// inotifyInit makes a non-blocking inotify instance; tests replace it.
var inotifyInit = func() (int, error) { return unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC) }

// newOpenBell watches the lock file that lock, a descriptor, holds open at
// path. It fails if path is another file by the time the watch is on.
func newOpenBell(word, asleep *uint32, lock int, path string) (*openBell, error) {
	fd, err := inotifyInit()
	if err != nil {
		return nil, os.NewSyscallError("inotify_init1", err)
	}
	b := &openBell{word: word, asleep: asleep, lock: lock, fd: fd}
	if _, err := unix.InotifyAddWatch(fd, path, openBellEvents|unix.IN_DONT_FOLLOW); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "inotify_add_watch", Path: path, Err: err}
	}
	var own, at unix.Stat_t
	if err := unix.Fstat(lock, &own); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if err := unix.Lstat(path, &at); err != nil || own.Dev != at.Dev || own.Ino != at.Ino {
		unix.Close(fd)
		return nil, &os.PathError{Op: "inotify_add_watch", Path: path, Err: errors.New("the lock file was replaced")}
	}
	return b, nil
}

// Wait sleeps until the lock file is opened or read, or the word leaves
// old, and after an opening watches the word for a while.
func (b *openBell) Wait(old uint32, timeout time.Duration) error {
	// Events queued while the caller was busy say nothing of now.
	if _, err := b.read(); err != nil {
		return err
	}
	// Dekker with a sender, which moves the word and then reads this.
	atomic.StoreUint32(b.asleep, 1)
	if atomic.LoadUint32(b.word) != old {
		atomic.StoreUint32(b.asleep, 0)
		return nil
	}
	ms := -1
	if timeout >= 0 {
		ms = int(min((timeout+time.Millisecond-1)/time.Millisecond, math.MaxInt32))
	}
	fds := []unix.PollFd{{Fd: int32(b.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, ms)
	atomic.StoreUint32(b.asleep, 0)
	if n <= 0 {
		if err == unix.EINTR {
			err = nil
		}
		return os.NewSyscallError("poll", err)
	}
	opened, err := b.read()
	if err != nil || !opened {
		return err
	}
	if testHookOpened != nil {
		testHookOpened()
	}
	// Yielding: the launch may wait in this processor's queue, and must
	// not wait for the watch to end (without it, the slowest tenth of the
	// bench's launches took twice as long).
	for end := time.Now().Add(openSpin); spinOnOpen && atomic.LoadUint32(b.word) == old && time.Now().Before(end); {
		unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
	}
	return nil
}

// testHookOpened, set by tests, runs when an idle Serve call wakes at an
// opening of the lock file.
var testHookOpened func()

// read takes the queued events and reports whether one was an opening.
func (b *openBell) read() (opened bool, err error) {
	var buf [64 * unix.SizeofInotifyEvent]byte
	for {
		n, err := unix.Read(b.fd, buf[:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return opened, nil
		case err != nil:
			return opened, os.NewSyscallError("read", err)
		}
		// struct inotify_event: wd, mask, cookie, len, then len bytes of name.
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			opened = opened || binary.NativeEndian.Uint32(buf[off+4:])&unix.IN_OPEN != 0
			off += unix.SizeofInotifyEvent + int(binary.NativeEndian.Uint32(buf[off+12:]))
		}
		if n < len(buf) {
			return opened, nil
		}
	}
}

// Ring reads a byte of the lock file, which the watch reports, if the
// Serve call sleeps. As a sender's, the primary's own rings (a message
// queued, a Serve's context ended, Release) move the word first.
func (b *openBell) Ring() error { return ringAsleep(b.lock, b.asleep) }

func (b *openBell) Close() error {
	if err := unix.Close(b.fd); err != nil {
		return os.NewSyscallError("close", err)
	}
	return nil
}

// lockFileBell is how a secondary rings the idle Serve calls of a bellOpen
// primary, after moving the doorbell's word: by reading a byte of the lock
// file if one sleeps.
type lockFileBell struct {
	lock   int
	asleep *uint32
}

func (*lockFileBell) Wait(uint32, time.Duration) error { return errors.ErrUnsupported }
func (*lockFileBell) Close() error                     { return nil }

func (l *lockFileBell) Ring() error { return ringAsleep(l.lock, l.asleep) }

// ringAsleep reads a byte of the lock file fd if asleep is set: Dekker
// with openBell.Wait, which sets it before it reads the word, the ringer
// reads it after moving the word.
func ringAsleep(fd int, asleep *uint32) error {
	if atomic.LoadUint32(asleep) == 0 {
		return nil
	}
	var b [1]byte
	for {
		_, err := unix.Pread(fd, b[:], 0)
		if err != unix.EINTR {
			return os.NewSyscallError("pread", err)
		}
	}
}
