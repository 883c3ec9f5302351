//go:build unix

package shm

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-instance/instance/internal/rundir"
	"golang.org/x/sys/unix"
)

// fifoBell is the portable doorbell: the waiter holds the FIFO open for
// reading and writing (so a read never sees end-of-file) and sleeps in
// poll(2); a ringer writes one byte. Bytes left over from earlier rings only
// cause an early return, which callers tolerate.
type fifoBell struct {
	word *uint32
	path string
	perm fs.FileMode

	mu     sync.Mutex
	rd     int // read end of a waiter, or -1; set before Wait, not changed while it runs
	wr     int // cached write end of a ringer, or -1
	closed bool
}

func openFIFOBell(word *uint32, path string, perm fs.FileMode, wait bool) (Doorbell, error) {
	b := &fifoBell{word: word, path: path, perm: perm, rd: -1, wr: -1}
	if !wait {
		return b, nil
	}
	if err := unix.Mkfifo(path, uint32(perm.Perm())); err != nil && err != unix.EEXIST {
		return nil, &os.PathError{Op: "mkfifo", Path: path, Err: err}
	}
	fd, err := b.open(unix.O_RDWR)
	if err != nil {
		return nil, err
	}
	b.rd = fd
	return b, nil
}

// open opens the FIFO without following a symbolic link and checks what it
// opened.
func (b *fifoBell) open(mode int) (int, error) {
	var fd int
	var err error
	for {
		fd, err = unix.Open(b.path, mode|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: b.path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, &os.PathError{Op: "fstat", Path: b.path, Err: err}
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFIFO:
		err = errors.New("not a FIFO")
	case b.perm&0o077 == 0 && int(st.Uid) != rundir.EUID():
		err = fmt.Errorf("owned by uid %d, not %d", st.Uid, rundir.EUID())
	case b.perm&0o077 != 0 && int(st.Uid) == rundir.EUID() && uint32(st.Mode)&0o777 != uint32(b.perm.Perm()):
		err = unix.Fchmod(fd, uint32(b.perm.Perm())) // past the umask, for a shared bell
	}
	if err != nil {
		unix.Close(fd)
		return -1, &os.PathError{Op: "open", Path: b.path, Err: err}
	}
	return fd, nil
}

func (b *fifoBell) Wait(old uint32, timeout time.Duration) error {
	if atomic.LoadUint32(b.word) != old {
		return nil
	}
	if b.rd < 0 {
		return &os.PathError{Op: "wait", Path: b.path, Err: errors.New("bell closed or opened to ring only")}
	}
	ms := -1
	if timeout >= 0 {
		ms = int(millis(timeout, math.MaxInt32)) // poll's timeout is a C int
	}
	fds := []unix.PollFd{{Fd: int32(b.rd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, ms)
	if err == unix.EINTR || n == 0 {
		return nil
	}
	if err != nil {
		return os.NewSyscallError("poll", err)
	}
	var buf [64]byte
	for {
		n, err := unix.Read(b.rd, buf[:])
		if err == unix.EINTR {
			continue
		}
		if n < len(buf) || err != nil {
			return nil
		}
	}
}

func (b *fifoBell) Ring() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return &os.PathError{Op: "ring", Path: b.path, Err: os.ErrClosed}
	}
	if b.rd >= 0 {
		return b.write(b.rd)
	}
	// A cached write end may belong to a FIFO that has since been removed
	// and made anew: on EPIPE, open the path again once.
	for attempt := 0; ; attempt++ {
		if b.wr < 0 {
			fd, err := b.open(unix.O_WRONLY)
			if err != nil {
				// No FIFO yet, or no reader: nobody is waiting.
				if errors.Is(err, unix.ENXIO) || errors.Is(err, unix.ENOENT) {
					return nil
				}
				return err
			}
			b.wr = fd
		}
		err := b.write(b.wr)
		if err == nil {
			return nil
		}
		unix.Close(b.wr)
		b.wr = -1
		if !errors.Is(err, unix.EPIPE) {
			return err
		}
		if attempt == 1 {
			return nil // the reader went away
		}
	}
}

func (b *fifoBell) write(fd int) error {
	for {
		_, err := unix.Write(fd, []byte{1})
		switch err {
		case unix.EINTR:
			continue
		case nil, unix.EAGAIN:
			return nil // a full FIFO already holds a wake-up
		}
		return &os.PathError{Op: "write", Path: b.path, Err: err}
	}
}

// Close releases the FIFO's descriptors. It must not run while Wait does.
func (b *fifoBell) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	var err error
	for _, fd := range []*int{&b.rd, &b.wr} {
		if *fd >= 0 {
			if cerr := unix.Close(*fd); cerr != nil && err == nil {
				err = os.NewSyscallError("close", cerr)
			}
			*fd = -1
		}
	}
	return err
}
