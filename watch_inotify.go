//go:build linux

package instance

import (
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// inotifyWatch: removing the lock file (or a FIFO, which the primary also
// holds open) changes its link count, an
// IN_ATTRIB event (IN_DELETE_SELF waits for the last descriptor, ours, to
// close); a rename is IN_MOVE_SELF; the directory's removal or rename,
// IN_DELETE_SELF or IN_MOVE_SELF on it. Events are not parsed: any of them
// is a reason to look at the path again.
type inotifyWatch struct {
	f   *os.File // non-blocking, in the runtime's poller: stop interrupts a read
	wds []int
}

func newLockWatch() (lockWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("inotify_init1", err)
	}
	return &inotifyWatch{f: os.NewFile(uintptr(fd), "inotify")}, nil
}

func (w *inotifyWatch) add(_ int, lock, dir string, fifos []string) error {
	rc, err := w.f.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	err = rc.Control(func(fd uintptr) {
		for _, wd := range w.wds {
			unix.InotifyRmWatch(int(fd), uint32(wd))
		}
		w.wds = w.wds[:0]
		const file = unix.IN_ATTRIB | unix.IN_MOVE_SELF | unix.IN_DELETE_SELF
		watches := map[string]uint32{lock: file, dir: unix.IN_MOVE_SELF | unix.IN_DELETE_SELF | unix.IN_ONLYDIR}
		for _, fifo := range fifos {
			watches[fifo] = file
		}
		for path, mask := range watches {
			wd, err := unix.InotifyAddWatch(int(fd), path, mask|unix.IN_DONT_FOLLOW)
			if err != nil {
				werr = &os.PathError{Op: "inotify_add_watch", Path: path, Err: err}
				return
			}
			w.wds = append(w.wds, wd)
		}
	})
	return errors.Join(err, werr)
}

func (w *inotifyWatch) wait() error {
	var buf [4096]byte
	_, err := w.f.Read(buf[:])
	return err
}

func (w *inotifyWatch) stop()        { w.f.SetReadDeadline(time.Unix(1, 0)) }
func (w *inotifyWatch) close() error { return w.f.Close() }
