//go:build darwin || dragonfly || freebsd || netbsd || openbsd

package instance

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// kqueueWatch: EVFILT_VNODE reports NOTE_DELETE when the lock file is
// unlinked (open or not) and NOTE_RENAME when it is renamed; the same on
// the directory for its removal or rename. The FIFOs are not watched
// (their descriptors are the doorbells'): their removal is noticed with
// the lock file's, not alone. A pipe's read end in the same
// kqueue lets stop interrupt kevent.
type kqueueWatch struct {
	kq   int
	pipe [2]int
	dir  int // the watched directory, open for its events, or -1
	lock int // the watched lock file's descriptor (not ours to close), or -1
}

var errStopped = errors.New("instance: watch stopped")

func newLockWatch() (lockWatch, error) {
	kq, err := unix.Kqueue()
	if err != nil {
		return nil, os.NewSyscallError("kqueue", err)
	}
	unix.CloseOnExec(kq)
	w := &kqueueWatch{kq: kq, pipe: [2]int{-1, -1}, dir: -1, lock: -1}
	// Made and marked close-on-exec under ForkLock, as package os does
	// where pipe2 is missing (macOS): else a child started meanwhile would
	// inherit both ends.
	syscall.ForkLock.RLock()
	err = unix.Pipe(w.pipe[:])
	if err == nil {
		unix.CloseOnExec(w.pipe[0])
		unix.CloseOnExec(w.pipe[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		w.close()
		return nil, os.NewSyscallError("pipe", err)
	}
	var ev [1]unix.Kevent_t
	unix.SetKevent(&ev[0], w.pipe[0], unix.EVFILT_READ, unix.EV_ADD)
	if _, err := unix.Kevent(kq, ev[:], nil, nil); err != nil {
		w.close()
		return nil, os.NewSyscallError("kevent", err)
	}
	return w, nil
}

func (w *kqueueWatch) add(lock int, _, dir string, _ []string) error {
	if w.lock >= 0 {
		// The old lock file stays open (retired): drop its event by hand.
		var ev [1]unix.Kevent_t
		unix.SetKevent(&ev[0], w.lock, unix.EVFILT_VNODE, unix.EV_DELETE)
		unix.Kevent(w.kq, ev[:], nil, nil)
		w.lock = -1
	}
	if w.dir >= 0 {
		unix.Close(w.dir) // which drops its event
		w.dir = -1
	}
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	w.dir, w.lock = dfd, lock
	var evs [2]unix.Kevent_t
	for i, fd := range []int{w.lock, w.dir} {
		unix.SetKevent(&evs[i], fd, unix.EVFILT_VNODE, unix.EV_ADD|unix.EV_CLEAR)
		evs[i].Fflags = unix.NOTE_DELETE | unix.NOTE_RENAME | unix.NOTE_REVOKE
	}
	if _, err := unix.Kevent(w.kq, evs[:], nil, nil); err != nil {
		return os.NewSyscallError("kevent", err)
	}
	return nil
}

func (w *kqueueWatch) wait() error {
	var evs [4]unix.Kevent_t
	for {
		n, err := unix.Kevent(w.kq, nil, evs[:], nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("kevent", err)
		}
		for _, ev := range evs[:n] {
			if int(ev.Ident) == w.pipe[0] {
				return errStopped
			}
		}
		return nil
	}
}

func (w *kqueueWatch) stop() { unix.Write(w.pipe[1], []byte{0}) }

func (w *kqueueWatch) close() error {
	var errs []error
	for _, fd := range []int{w.kq, w.pipe[0], w.pipe[1], w.dir} {
		if fd >= 0 {
			errs = append(errs, unix.Close(fd))
		}
	}
	return errors.Join(errs...)
}
