//go:build unix && !aix

package instance

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/go-instance/instance/handoff"
	"github.com/go-instance/instance/internal/rundir"
	"github.com/go-instance/instance/shm"
	"golang.org/x/sys/unix"
)

// The futex doorbell where the kernel has one; a FIFO elsewhere.
var defaultBell = func() uint32 {
	if runtime.GOOS == "linux" {
		return bellFutex
	}
	return bellFIFO
}()

// files names an instance's objects: <dir>/<base>.lock, which is both the
// lock and the shared region (one file to open and check, not two), and
// for the FIFO doorbell <base>.bell, <base>.serve (for idle Serve calls)
// and <base>.sNN (one per slot, made when first used).
//
// The lock file is held as a bare descriptor, not an *os.File: os.NewFile
// costs a secondary a system call, and a descriptor has no finalizer that
// could close the lock.
//
// The per-user directory is checked (see package rundir) by a primary, and
// by a secondary only if its lock file does not vouch for it: the
// directory that rundir.Likely guesses, checked by nobody yet, is
// unchecked until then.
type files struct {
	prefix    string      // <dir>/<base>
	perm      fs.FileMode // of the files created
	shared    bool        // machine scope: files of other users are expected
	unchecked bool        // prefix's directory is rundir.Likely's guess
	held      *flockLock  // the lock file and its lock, once openLock has opened it
	size      int64       // its size when opened, until openRegion uses it; else -1
}

func openFiles(c *config, appID string) (*files, error) {
	f := &files{perm: 0o600, size: -1}
	var dir, session string
	switch {
	case c.dir != "":
		dir = c.dir // opening the lock file tells if it is no directory
	case c.scope == ScopeMachine:
		// /tmp, not os.TempDir: on macOS $TMPDIR is per user.
		dir, f.perm, f.shared = "/tmp", 0o666, true
	default:
		dir, f.unchecked = rundir.Likely(), true
		if c.scope == ScopeSession {
			session = sessionName()
		}
	}
	f.prefix = filepath.Join(dir, baseName(appID, c, session))
	return f, nil
}

// sessionName identifies the graphical session: its display.
func sessionName() string {
	if d := os.Getenv("WAYLAND_DISPLAY"); d != "" {
		return "wayland:" + d
	}
	if d := os.Getenv("DISPLAY"); d != "" {
		// host:display.screen — every screen is the same session.
		if i := strings.LastIndexByte(d, ':'); i >= 0 {
			if j := strings.IndexByte(d[i:], '.'); j >= 0 {
				d = d[:i+j]
			}
		}
		return "x11:" + d
	}
	return ""
}

// userDir is the per-user directory (see package rundir).
func userDir() (string, error) {
	dir, err := rundir.User()
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrLockUnavailable, err)
	}
	return dir, nil
}

func (f *files) lockPath() string { return f.prefix + ".lock" }

// lockFD is the lock file's descriptor (-1 once closed).
func (f *files) lockFD() int { return f.held.fd }

// openLock opens the lock file, creating it if missing. In an unchecked
// directory it first looks for the file there: a regular file of this
// user's with one link and no access for others was put there by this
// user, whose primary checked the directory, or is one that nobody else
// can open, and a secondary then need not check (confirmLock checks it for
// a primary). Without such a file, the directory is checked, and may turn
// out to be another.
func (f *files) openLock() (ownerLock, error) {
	fd, path := -1, f.lockPath()
	if f.unchecked {
		fd, _ = f.open(path, false)
		if fd < 0 {
			if err := f.checkDir(); err != nil {
				return nil, err
			}
			path = f.lockPath()
		}
	}
	if fd < 0 {
		var err error
		if fd, err = f.open(path, true); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrLockUnavailable, err)
		}
	}
	f.held = &flockLock{fd: fd, path: path}
	return f.held, nil
}

// checkDir checks the per-user directory, which may be another than the
// one guessed, and puts the files there.
func (f *files) checkDir() error {
	dir, err := userDir()
	if err != nil {
		return err
	}
	f.prefix = filepath.Join(dir, filepath.Base(f.prefix))
	f.unchecked = false
	return nil
}

// confirmLock checks the lock file of a launch that took its lock and is
// to be the primary: in the directory the checks choose, and still at its
// path. A file removed since the launch opened it (its primary published
// itself anew, then left) can be locked, but a primary of it could not be
// found, and the next launch would take the file at the path: a second
// primary. If the file is another, it replaces the first in the lock
// (releasing it), and moved says that the caller must try it.
func (f *files) confirmLock() (moved bool, err error) {
	if f.unchecked {
		guessed := f.prefix
		if err := f.checkDir(); err != nil {
			return false, err
		}
		moved = f.prefix != guessed
	}
	if !moved && f.lockPublished() {
		return false, nil
	}
	fd, err := f.open(f.lockPath(), true)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrLockUnavailable, err)
	}
	unix.Close(f.held.fd)
	f.held.fd, f.held.path = fd, f.lockPath()
	return true, nil
}

// flockLock is flock(2) on the lock file; closing the file releases it.
type flockLock struct {
	fd   int // -1 once closed
	path string
}

func (l *flockLock) TryLock() (bool, error) {
	for {
		switch err := unix.Flock(l.fd, unix.LOCK_EX|unix.LOCK_NB); err {
		case nil:
			return true, nil
		case unix.EWOULDBLOCK:
			return false, nil
		case unix.EINTR:
		default:
			return false, &fs.PathError{Op: "flock", Path: l.path, Err: err}
		}
	}
}

func (l *flockLock) Unlock() error {
	if err := unix.Flock(l.fd, unix.LOCK_UN); err != nil {
		return &fs.PathError{Op: "flock", Path: l.path, Err: err}
	}
	return nil
}

func (l *flockLock) Close() error {
	if l.fd < 0 {
		return nil
	}
	err := unix.Close(l.fd)
	l.fd = -1
	if err != nil {
		return &fs.PathError{Op: "close", Path: l.path, Err: err}
	}
	return nil
}

// fileMapping is the lock file mapped whole.
type fileMapping []byte

func (m fileMapping) Bytes() []byte { return m }
func (m fileMapping) Close() error  { return os.NewSyscallError("munmap", unix.Munmap(m)) }

func (f *files) mapLock(size int) (mapping, error) {
	b, err := unix.Mmap(f.lockFD(), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, &fs.PathError{Op: "mmap", Path: f.lockPath(), Err: err}
	}
	return fileMapping(b), nil
}

// lockSize returns the lock file's size.
func (f *files) lockSize() (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(f.lockFD(), &st); err != nil {
		return 0, &fs.PathError{Op: "fstat", Path: f.lockPath(), Err: err}
	}
	return st.Size, nil
}

func (f *files) truncateLock(size int64) error {
	for {
		err := unix.Ftruncate(f.lockFD(), size)
		if err == nil {
			return nil
		}
		if err != unix.EINTR {
			return &fs.PathError{Op: "truncate", Path: f.lockPath(), Err: err}
		}
	}
}

// createRegion gives the lock file, which a new primary holds, the
// region's size and maps it.
func (f *files) createRegion(size int) (mapping, error) {
	if n, err := f.lockSize(); err != nil || n != int64(size) {
		if err := f.truncateLock(int64(size)); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrLockUnavailable, err)
		}
	}
	m, err := f.mapLock(size)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLockUnavailable, err)
	}
	return m, nil
}

// restoreRegion gives the region back its size after another process
// truncated or grew it.
func (f *files) restoreRegion(size int) {
	if n, err := f.lockSize(); err == nil && n != int64(size) {
		f.truncateLock(int64(size))
	}
}

// openRegion maps the region for a secondary, through the lock file it has
// open.
func (f *files) openRegion(size int) (mapping, error) {
	n := f.size // known from opening, the first time
	f.size = -1
	if n < 0 {
		var err error
		if n, err = f.lockSize(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrLockUnavailable, err)
		}
	}
	if n < int64(size) {
		// Too short, yet the lock is held: the primary is about to size
		// the file, or someone truncated it under the primary. Give it its
		// size back (zeros, which the primary reads as damage and repairs)
		// so that the primary can be woken, and need not notice itself.
		if err := f.truncateLock(int64(size)); err != nil {
			return nil, fmt.Errorf("%w: %w", handoff.ErrNotReady, err)
		}
	}
	// Grown by someone else, it is still its first size bytes, and the
	// header tells whether those are right.
	m, err := f.mapLock(size)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLockUnavailable, err)
	}
	return m, nil
}

// open opens path read-write without following a symbolic link, creating
// it (with O_EXCL, so that a file planted by another user is never taken
// for ours) if create is set, and checks that it is a regular file with
// one link, of this user, closed to others. A file of ours with loose permissions is
// tightened; anything else is refused.
func (f *files) open(path string, create bool) (int, error) {
	const flags = unix.O_RDWR | unix.O_NOFOLLOW | unix.O_CLOEXEC
	var fd int
	var err error
	for range 100 {
		fd, err = retryEINTR(func() (int, error) { return unix.Open(path, flags, 0) })
		if err != unix.ENOENT || !create {
			break
		}
		fd, err = retryEINTR(func() (int, error) { return unix.Open(path, flags|unix.O_CREAT|unix.O_EXCL, uint32(f.perm)) })
		if err == nil {
			if f.shared {
				unix.Fchmod(fd, uint32(f.perm)) // past the umask: every user opens it
			}
			break
		}
		if err != unix.EEXIST {
			break
		}
	}
	if err == unix.ELOOP || err == unix.EMLINK { // EMLINK: FreeBSD's O_NOFOLLOW
		return -1, &fs.PathError{Op: "open", Path: path, Err: errors.New("is a symbolic link")}
	}
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	if err := f.check(fd, path); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func (f *files) check(fd int, path string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &fs.PathError{Op: "fstat", Path: path, Err: err}
	}
	f.size = st.Size
	var why string
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		why = "is not a regular file"
	case st.Nlink > 1:
		// A link to some other file, which we would truncate and
		// overwrite: anyone can make one in a shared directory where the
		// system does not protect hard links.
		why = fmt.Sprintf("has %d hard links", st.Nlink)
	case f.shared:
		return nil
	case int(st.Uid) != rundir.EUID():
		why = fmt.Sprintf("is owned by uid %d, not %d", st.Uid, rundir.EUID())
	case st.Mode&0o077 != 0 && f.unchecked:
		// Not taken on trust: another user may hold a descriptor of a file
		// open to others (one of ScopeMachine's, linked into a directory
		// of theirs), and use it as this user's lock. The directory's
		// checks decide.
		why = fmt.Sprintf("has mode %#o", st.Mode&0o777)
	case st.Mode&0o077 != 0:
		if err := unix.Fchmod(fd, uint32(f.perm)); err != nil {
			return &fs.PathError{Op: "chmod", Path: path, Err: err}
		}
		return nil
	default:
		return nil
	}
	return &fs.PathError{Op: "open", Path: path, Err: errors.New(why)}
}

func retryEINTR(fn func() (int, error)) (int, error) {
	for {
		n, err := fn()
		if err != unix.EINTR {
			return n, err
		}
	}
}

// doorbell returns the bell of word: the primary's (slot < 0) or a slot's.
// wait: the caller will wait on it, rather than ring it.
func (f *files) doorbell(word *uint32, kind uint32, slot int, wait bool) (shm.Doorbell, error) {
	switch kind {
	case bellFutex:
		b, err := shm.NewFutexBell(word)
		if errors.Is(err, errors.ErrUnsupported) {
			return nil, fmt.Errorf("%w: the primary waits on a futex, which %s lacks", ErrIncompatible, runtime.GOOS)
		}
		return b, err
	case bellFIFO:
		path := f.prefix + ".bell"
		if slot >= 0 {
			path = fmt.Sprintf("%s.s%02d", f.prefix, slot)
		}
		return shm.OpenFIFOBell(word, path, f.perm, wait)
	}
	return nil, fmt.Errorf("%w: unknown doorbell kind %d", ErrIncompatible, kind)
}

// serveDoorbell returns the bell on which idle Serve calls wait (see
// Instance.serveBell): a watch of the lock file or the futex's set of
// them (see serveBell), or a FIFO of their own.
func (f *files) serveDoorbell(word *uint32, kind uint32, wait bool) (shm.Doorbell, error) {
	switch kind {
	case bellFutex:
		return serveBell(word, f.lockFD(), wait)
	case bellFIFO:
		return shm.OpenFIFOBell(word, f.prefix+".serve", f.perm, wait)
	}
	return nil, nil
}

// processAlive reports whether pid still runs (EPERM: it does, as another
// user). A PID of 0 or less, which kill(2) would take for a group, is
// taken as alive: the slot is left alone rather than taken from a live
// sender. One beyond any PID's range (damage) is taken as gone: kill(2)
// would read it as negative too. A zombie, which kill(2) still finds until
// its parent reaps it, is gone where the system tells (see zombie).
func processAlive(pid int) bool {
	if pid <= 0 {
		return true
	}
	if pid > math.MaxInt32 {
		return false
	}
	err := unix.Kill(pid, 0)
	return (err == nil || err == unix.EPERM) && !zombie(pid)
}

// allowForeground is for Windows, where focus passes by permission; X11 and
// Wayland pass it with the forwarded activation token instead.
func allowForeground(int) {}
