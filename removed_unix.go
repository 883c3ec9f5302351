//go:build unix && !aix

package instance

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-instance/instance/handoff"
	"github.com/go-instance/instance/internal/rundir"
	"github.com/go-instance/instance/shm"
	"golang.org/x/sys/unix"
)

// guard keeps a primary's lock file where launches look for it: a lock
// that keeps the temp-dir cleaner away, and a watch that re-publishes the
// primary if the file is removed all the same. Without it, the next launch
// would create the file anew, take its lock and be a second primary.
type guard struct {
	dir   *os.File      // flock(LOCK_SH) on the directory, or nil
	watch lockWatch     // nil where the system gives no notice
	done  chan struct{} // closed when the watching goroutine has ended
	fifos []os.FileInfo // the FIFOs the primary reads, as in fifoNames, or nil
}

// lockWatch tells when a lock file or its directory may have been removed
// or renamed, without polling (watch_*.go).
type lockWatch interface {
	add(lock int, path, dir string, fifos []string) error // watch the lock file (descriptor and path), dir and fifos instead of any before
	wait() error                                          // until something may have changed; an error once stopped
	stop()                                                // makes wait return an error, from another goroutine
	close() error
}

func (inst *Instance) startGuard() {
	g := &inst.guard
	g.dir = lockDir(inst.files)
	w, err := newLockWatch()
	if err != nil {
		return // no notice of removal here (or no inotify instance left): documented
	}
	g.watch, g.done = w, make(chan struct{})
	g.fifos = inst.files.fifos(inst.cfg)
	go inst.watchFiles(w, inst.files)
}

func (inst *Instance) stopGuard() {
	g := &inst.guard
	if g.watch != nil {
		g.watch.stop()
		<-g.done
	}
	if g.dir != nil {
		g.dir.Close()
	}
}

// watchFiles sleeps until the lock file f, its directory or one of the
// FIFOs changes, and publishes the primary anew when one is no longer at
// its path. It ends when stopped, or when the primary could not be
// published again (another primary took the path meanwhile, say): the
// primary then serves the senders that reach it through the old file.
func (inst *Instance) watchFiles(w lockWatch, f *files) {
	g := &inst.guard
	defer close(g.done)
	defer w.close()
	f.sweepAsides()
	for {
		var fifos []string
		if g.fifos != nil {
			for _, name := range fifoNames {
				fifos = append(fifos, f.prefix+name)
			}
		}
		if err := w.add(f.lockFD(), f.lockPath(), filepath.Dir(f.prefix), fifos); err != nil && f.lockPublished() && g.fifosPublished(fifos) {
			return // cannot watch what is there; gone is another matter
		}
		for f.lockPublished() && g.fifosPublished(fifos) {
			if err := w.wait(); err != nil {
				return
			}
		}
		// If only a FIFO went (a sweep still removing what it listed, say),
		// launches could no longer wake this primary, or its idle Serve:
		// it is published anew all the same, its lock file replaced.
		nf, err := inst.heal(f)
		for try := 0; errors.Is(err, fs.ErrNotExist) && try < 3; try++ {
			nf, err = inst.heal(f) // the directory went while it was re-made
		}
		if err != nil {
			return
		}
		f = nf
		if g.dir != nil {
			g.dir.Close()
		}
		g.dir, g.fifos = lockDir(f), f.fifos(inst.cfg)
	}
}

// lockPublished reports whether f's lock file is still at its path.
func (f *files) lockPublished() bool {
	var own, at unix.Stat_t
	if unix.Fstat(f.lockFD(), &own) != nil {
		return true // cannot tell; nothing changes
	}
	err := unix.Lstat(f.lockPath(), &at)
	return err == nil && own.Dev == at.Dev && own.Ino == at.Ino
}

// fifos identifies the FIFOs that were just opened, as in fifoNames, if
// the doorbell is a FIFO (nil otherwise, and a FileInfo that matches
// nothing for one already gone).
func (f *files) fifos(cfg *config) []os.FileInfo {
	if cfg.bell != bellFIFO {
		return nil
	}
	var infos []os.FileInfo
	for _, name := range fifoNames {
		st, err := os.Lstat(f.prefix + name)
		if err != nil {
			st = gone{}
		}
		infos = append(infos, st)
	}
	return infos
}

// gone matches no file: os.SameFile is false for it.
type gone struct{ os.FileInfo }

// fifosPublished reports whether the FIFOs are still at their paths.
func (g *guard) fifosPublished(paths []string) bool {
	for i, path := range paths {
		at, err := os.Lstat(path)
		if err != nil || !os.SameFile(g.fifos[i], at) {
			return false
		}
	}
	return true
}

// heal publishes the primary again, as a new primary would: the directory
// (re-made, with its checks, if it is the per-user one), a new lock file,
// locked, and a region of a new generation, through which it receives from
// then on. The old region is retired, not closed. The new lock file and
// FIFOs are made whole under names of their own, then renamed to their
// paths, the lock file over old's if that is still there: the path never
// holds a file that is not locked (the lock file is never unlinked), and a
// heal that fails removes what it made.
func (inst *Instance) heal(old *files) (*files, error) {
	cfg := inst.cfg
	f, err := openFiles(cfg, cfg.appID)
	if err != nil {
		return nil, err
	}
	if f.unchecked {
		if err := f.checkDir(); err != nil {
			return nil, err
		}
	}
	// Looked at first, too: the FIFOs, which publish replaces, are not to
	// be taken from a primary that has the path.
	if err := f.free(old); err != nil {
		return nil, err
	}
	lock, aside, err := f.lockAside()
	if err != nil {
		return nil, err
	}
	p := &publication{files: f, lock: lock}
	if err := inst.publish(p, func() error { return f.place(aside, p.fifos, old) }); err != nil {
		for _, name := range append(p.fifos, aside) {
			unix.Unlink(name) // gone already if renamed in
		}
		if p.region != nil {
			p.region.Close()
		}
		for _, b := range []shm.Doorbell{p.bell, p.serve} {
			if b != nil {
				b.Close()
			}
		}
		lock.Close()
		return nil, err
	}
	return f, nil
}

// lockAside creates and locks a lock file for f under a name of its own
// next to the lock path, one that nobody can guess to put a file there
// first, and returns the lock and the name.
func (f *files) lockAside() (ownerLock, string, error) {
	for {
		aside := fmt.Sprintf("%s-%016x", f.lockPath(), rand.Uint64())
		fd, err := retryEINTR(func() (int, error) {
			return unix.Open(aside, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(f.perm))
		})
		if err == unix.EEXIST {
			continue
		}
		if err != nil {
			return nil, "", fmt.Errorf("%w: %w", ErrLockUnavailable, &fs.PathError{Op: "open", Path: aside, Err: err})
		}
		if f.shared {
			unix.Fchmod(fd, uint32(f.perm)) // past the umask: every user opens it
		}
		f.held = &flockLock{fd: fd, path: aside}
		if ok, err := f.held.TryLock(); !ok || err != nil {
			f.held.Close()
			unix.Unlink(aside)
			if err == nil {
				err = &fs.PathError{Op: "flock", Path: aside, Err: errors.New("a new file is locked by another process")}
			}
			return nil, "", fmt.Errorf("%w: %w", ErrLockUnavailable, err)
		}
		return f.held, aside, nil
	}
}

// free reports whether the lock path holds the primary's own file old (a
// FIFO went), nothing (the file went), or a file that nobody holds locked
// (left by a primary that has gone, or made by a launch that has yet to
// lock it, and which confirmLock then sends to this primary's file): not
// another primary's.
func (f *files) free(old *files) error {
	path := f.lockPath()
	var own, at unix.Stat_t
	if unix.Lstat(path, &at) != nil {
		return nil
	}
	if unix.Fstat(old.lockFD(), &own) == nil && own.Dev == at.Dev && own.Ino == at.Ino {
		return nil
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err == nil {
		err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) // released by the close
		unix.Close(fd)
	}
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %s is taken", ErrLockUnavailable, path)
}

// place renames the FIFOs and then the lock file made aside to their
// paths, if the lock path is free of other primaries. (A launch that makes
// the file between the look and the rename loses the path to this
// primary, as this primary loses it to a launch a moment sooner.)
func (f *files) place(aside string, fifos []string, old *files) error {
	path := f.lockPath()
	if err := f.free(old); err != nil {
		return err
	}
	for i, from := range fifos {
		if err := unix.Rename(from, f.prefix+fifoNames[i]); err != nil {
			return &fs.PathError{Op: "rename", Path: f.prefix + fifoNames[i], Err: err}
		}
	}
	if err := unix.Rename(aside, path); err != nil {
		return fmt.Errorf("%w: %w", ErrLockUnavailable, &fs.PathError{Op: "rename", Path: path, Err: err})
	}
	f.held.path = path
	return nil
}

// publish sizes, maps and initialises p's region and its doorbells (the
// FIFOs made aside, as the lock file is) and, unless Release came first,
// puts it all in place and makes it the current one.
func (inst *Instance) publish(p *publication, place func() error) error {
	cfg := inst.cfg
	var err error
	if p.region, err = p.files.createRegion(cfg.layout.Size()); err != nil {
		return err
	}
	// The doorbells before the region is ready: a sender may ring them at
	// once. A futex's idle Serve calls wait in its Serve set from here on:
	// the watch of the lock file (serveBell) is the first publication's.
	word := handoff.BellWordOf(p.region.Bytes())
	if cfg.bell == bellFIFO {
		for _, name := range fifoNames {
			aside, err := p.files.fifoAside(name)
			if err != nil {
				return err
			}
			p.fifos = append(p.fifos, aside)
		}
		if p.bell, err = shm.OpenFIFOBell(word, p.fifos[0], p.files.perm, true); err != nil {
			return err
		}
		if p.serve, err = shm.OpenFIFOBell(word, p.fifos[1], p.files.perm, true); err != nil {
			return err
		}
	} else if p.bell, err = p.files.doorbell(word, cfg.bell, -1, true); err != nil {
		return err
	}
	inst.mu.Lock()
	gen := inst.view.Generation() + 1
	inst.mu.Unlock()
	// Its pages are the file system's when first written: on a full one,
	// that write faults.
	if ferr := catchFault(func() { p.view, err = handoff.Init(p.region.Bytes(), cfg.layout, owner(), gen, cfg.bell) }); ferr != nil {
		err = fmt.Errorf("%w: writing the new region (a full file system?): %w", ErrLockUnavailable, ferr)
	}
	if err != nil {
		return err
	}
	if testHookPublish != nil {
		if err := testHookPublish(); err != nil {
			return err
		}
	}
	p.slotBells = make([]shm.Doorbell, cfg.layout.Slots)
	p.rc = newReceiver(cfg, p.files, p.view, p.slotBells)
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if inst.closing {
		return ErrClosed
	}
	if err := place(); err != nil {
		return err
	}
	inst.retire(p)
	return nil
}

// testHookPublish, set by tests, runs before a publication is put in
// place; an error fails it.
var testHookPublish func() error

// sweepAsides removes what a primary killed in the middle of publishing
// itself again (heal) left beside f's lock file: lock files and FIFOs made
// aside under names of their own, a minute old or more, of this user's,
// and in use by nobody (a lock file that nobody holds locked, a FIFO that
// nobody reads), as a publication in progress holds its own.
func (f *files) sweepAsides() {
	dir, base := filepath.Split(f.prefix)
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	for _, name := range names {
		fifo, ok := asideOf(base, name)
		if !ok {
			continue
		}
		path := dir + name
		var st unix.Stat_t
		if unix.Lstat(path, &st) != nil || int(st.Uid) != os.Geteuid() ||
			time.Since(time.Unix(st.Mtim.Unix())) < time.Minute {
			continue
		}
		mode := uint32(unix.S_IFREG)
		if fifo {
			mode = unix.S_IFIFO
		}
		if uint32(st.Mode)&unix.S_IFMT != mode {
			continue
		}
		if fifo {
			fd, err := unix.Open(path, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err == nil { // read by someone
				unix.Close(fd)
			} else if err == unix.ENXIO {
				unix.Unlink(path)
			}
			continue
		}
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		if unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) == nil {
			unix.Unlink(path)
		}
		unix.Close(fd)
	}
}

// asideOf reports whether name is a file made aside for the files of base
// (see lockAside and fifoAside), and whether it is a FIFO.
func asideOf(base, name string) (fifo, ok bool) {
	rest, found := strings.CutPrefix(name, base)
	if !found {
		return false, false
	}
	for _, kind := range append([]string{".lock"}, fifoNames...) {
		if hex, found := strings.CutPrefix(rest, kind+"-"); found && len(hex) == 16 &&
			strings.Trim(hex, "0123456789abcdef") == "" {
			return kind != ".lock", true
		}
	}
	return false, false
}

// fifoNames are the suffixes of the primary's FIFOs: its doorbell and
// its idle Serve calls'.
var fifoNames = []string{".bell", ".serve"}

// fifoAside makes a new FIFO for one of the primary's FIFO paths (name,
// of fifoNames) under a name of its own, which place renames over the
// path: the old FIFO, which senders of the old region may still hold
// open, keeps a reader of its own (two readers of one FIFO could take each
// other's wake-ups).
func (f *files) fifoAside(name string) (string, error) {
	for {
		// A name nobody can guess to put a file there first.
		aside := fmt.Sprintf("%s%s-%016x", f.prefix, name, rand.Uint64())
		err := unix.Mkfifo(aside, uint32(f.perm))
		if err == unix.EEXIST {
			continue
		}
		if err != nil {
			return "", &fs.PathError{Op: "mkfifo", Path: aside, Err: err}
		}
		return aside, nil
	}
}

// lockDir takes flock(LOCK_SH) on f's directory if it is the per-user one
// under the temp directory, and returns it (nil otherwise, or if it cannot
// be taken). systemd-tmpfiles, the age-based cleaner of most Linux
// systems, skips a directory on which flock(LOCK_EX|LOCK_NB) fails, and
// everything in it. Shared: every application's primary holds it at once.
// $XDG_RUNTIME_DIR is not swept; a directory given to WithDir is the
// application's, and so are the locks on it; /tmp, for ScopeMachine, is
// swept file by file.
func lockDir(f *files) *os.File {
	dir := filepath.Dir(f.prefix)
	if !rundir.InTemp(dir) {
		return nil
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	// A cleaner holds LOCK_EX while it sweeps the directory: wait that out,
	// briefly (about half a second in all).
	for try := 0; ; try++ {
		err := unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB)
		if err == nil {
			return os.NewFile(uintptr(fd), dir)
		}
		if err != unix.EWOULDBLOCK && err != unix.EINTR || try == 20 {
			unix.Close(fd)
			return nil
		}
		time.Sleep(time.Millisecond << min(try, 5))
	}
}
