//go:build windows

package instance

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"github.com/go-instance/instance/handoff"
	"github.com/go-instance/instance/internal/rundir"
	"github.com/go-instance/instance/internal/winapi"
	"github.com/go-instance/instance/shm"
	"golang.org/x/sys/windows"
)

var defaultBell = bellEvent

// files names an instance's objects: a lock file, <dir>\<base>.lock, and
// named kernel objects <object>.shm (the region, backed by the page file),
// <object>.bell, <object>.serve and <object>.sNN (auto-reset events).
//
// An object's name ends with a secret that the lock file keeps, 16 random
// bytes that the first primary writes: another user in the session, who
// may make objects under any name in Local\, cannot read the file (its
// DACL is the user's, and so is its directory), so cannot know the names
// to make them first (squat them) and keep the user's launches from their
// primary. In a directory of WithDir's that others may write, another user
// who made the lock file first can do that, as on Unix, but still not read
// or inject messages: the objects are the user's (see CheckOwner). Machine
// scope has a secret too, which every user may read, as every user may
// use its objects.
type files struct {
	lockPath string
	prefix   string      // Local\ or Global\ name, without the secret
	object   string      // prefix and secret, once readSecret has read it
	shared   bool        // machine scope: objects open to every user
	perm     fs.FileMode // 0o600, or 0o666 when shared
	lock     *fileLock   // set by openLock
}

// secretAt is where the lock file keeps the secret: past the byte that a
// primary's LockFileEx locks, which no other handle can read.
const secretAt, secretLen = 8, 16

func openFiles(c *config, appID string) (*files, error) {
	u, err := winapi.UserSID()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLockUnavailable, err)
	}
	sid := u.String()
	var session uint32
	if err := windows.ProcessIdToSessionId(windows.GetCurrentProcessId(), &session); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLockUnavailable, os.NewSyscallError("ProcessIdToSessionId", err))
	}
	f := &files{perm: 0o600}
	// Local\ objects live in the session's namespace, so that the user's
	// SID in the name keeps "run as another user" on the same desktop
	// apart. They cannot span sessions without SeCreateGlobalPrivilege,
	// so ScopeUser is per session too.
	ns, scopeKey := `Local\`, fmt.Sprintf("%s\x00session %d", sid, session)
	var dir string
	switch {
	case c.dir != "":
		abs, err := filepath.Abs(c.dir)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrLockUnavailable, err)
		}
		st, err := os.Stat(abs)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrLockUnavailable, err)
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("%w: %s is not a directory", ErrLockUnavailable, abs)
		}
		dir = abs
	case c.scope == ScopeMachine:
		ns, scopeKey, f.shared, f.perm = `Global\`, "machine", true, 0o666
		dir = os.Getenv("ProgramData")
		if dir == "" {
			dir = `C:\ProgramData`
		}
		dir = filepath.Join(dir, "go-instance")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrLockUnavailable, err)
		}
	default:
		if dir, err = rundir.User(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrLockUnavailable, err)
		}
	}
	// The directory is not in the name: the secret that ends the objects'
	// names is the lock file's, which keeps launches that find another one
	// (another %LocalAppData% in their environment, say) from the region
	// of a primary whose lock they do not see, and brings together those
	// that spell one directory otherwise (its short name, a link to it).
	name := baseName(appID, c, scopeKey)
	f.lockPath = filepath.Join(dir, name+".lock")
	f.prefix = ns + name
	return f, nil
}

// confirmLock has nothing to confirm: the directory is not guessed (it is
// the profile's, or WithDir's), and the lock file cannot be removed while
// it is open (see the Unix files).
func (f *files) confirmLock() (moved bool, err error) { return false, nil }

// openLock opens the lock file without following a reparse point
// (symbolic link or junction), not inheritable, readable and writable (for
// the secret) and shareable, so that every launch can open it.
func (f *files) openLock() (ownerLock, error) {
	path16, err := windows.UTF16PtrFromString(extendedPath(f.lockPath))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidName, err)
	}
	const share = windows.FILE_SHARE_READ | windows.FILE_SHARE_WRITE
	const flags = windows.FILE_ATTRIBUTE_NORMAL | windows.FILE_FLAG_OPEN_REPARSE_POINT
	// Usually the file exists: its DACL, which only a file made now gets,
	// need not be built.
	const access = windows.GENERIC_READ | windows.GENERIC_WRITE
	h, err := windows.CreateFile(path16, access, share, nil, windows.OPEN_EXISTING, flags, 0)
	if errors.Is(err, windows.ERROR_FILE_NOT_FOUND) {
		var sa *windows.SecurityAttributes
		if sa, err = winapi.SecurityAttributes(f.shared); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrLockUnavailable, err)
		}
		h, err = windows.CreateFile(path16, access, share, sa, windows.OPEN_ALWAYS, flags, 0)
	}
	if err != nil && !errors.Is(err, windows.ERROR_ALREADY_EXISTS) {
		return nil, fmt.Errorf("%w: %w", ErrLockUnavailable, &fs.PathError{Op: "open", Path: f.lockPath, Err: err})
	}
	// Its attributes alone: GetFileInformationByHandle also asks for the
	// volume's serial number, which costs Wine half a millisecond.
	var info fileAttributeTagInfo
	if err := windows.GetFileInformationByHandleEx(h, windows.FileAttributeTagInfo, (*byte)(unsafe.Pointer(&info)), uint32(unsafe.Sizeof(info))); err != nil {
		windows.CloseHandle(h)
		return nil, fmt.Errorf("%w: %w", ErrLockUnavailable, &fs.PathError{Op: "stat", Path: f.lockPath, Err: err})
	}
	if info.FileAttributes&(windows.FILE_ATTRIBUTE_REPARSE_POINT|windows.FILE_ATTRIBUTE_DIRECTORY) != 0 {
		windows.CloseHandle(h)
		return nil, fmt.Errorf("%w: %w", ErrLockUnavailable,
			&fs.PathError{Op: "open", Path: f.lockPath, Err: errors.New("is a symbolic link, junction or directory")})
	}
	f.lock = &fileLock{f: os.NewFile(uintptr(h), f.lockPath)}
	return f.lock, nil
}

// readSecret names the objects with the lock file's secret, and reports
// false if the file has none yet.
func (f *files) readSecret() (bool, error) {
	var b [secretLen]byte
	n, err := f.lock.f.ReadAt(b[:], secretAt)
	if n < secretLen || b == ([secretLen]byte{}) {
		if err != nil && !errors.Is(err, io.EOF) {
			return false, err
		}
		return false, nil // a primary writing it, or none has yet
	}
	f.object = f.prefix + "-" + hex.EncodeToString(b[:])
	return true, nil
}

// ensureSecret, for a primary, reads the lock file's secret, or writes
// one if it has none.
func (f *files) ensureSecret() error {
	if ok, err := f.readSecret(); ok || err != nil {
		return err
	}
	var b [secretLen]byte
	if err := winapi.ProcessPrng(&b[0], uintptr(len(b))); err != nil {
		return os.NewSyscallError("ProcessPrng", err)
	}
	if _, err := f.lock.f.WriteAt(b[:], secretAt); err != nil {
		return err
	}
	if ok, err := f.readSecret(); !ok || err != nil {
		return fmt.Errorf("%s: secret not kept: %w", f.lockPath, err)
	}
	return nil
}

// extendedPath gives an absolute path the \\?\ prefix, without which
// CreateFile refuses one of MAX_PATH (260) characters or more, unless the
// program declares itself aware of long paths and the system allows them.
// The prefix turns off the cleaning of the path, which filepath.Abs and
// Join have done. Every path gets it, not only long ones, so that every
// test runs it.
func extendedPath(p string) string {
	switch {
	case strings.HasPrefix(p, `\\?\`), strings.HasPrefix(p, `\\.\`):
		return p
	case strings.HasPrefix(p, `\\`):
		return `\\?\UNC\` + p[2:]
	case len(p) >= 3 && p[1] == ':' && p[2] == '\\':
		return `\\?\` + p
	}
	return p
}

// fileAttributeTagInfo is FILE_ATTRIBUTE_TAG_INFO.
type fileAttributeTagInfo struct{ FileAttributes, ReparseTag uint32 }

// fileLock is LockFileEx on the lock file; closing the file releases it.
type fileLock struct {
	f    *os.File
	held bool // LockFileEx takes no lock twice: taken again, it would report false
}

// TryLock reports true once the lock is held, however often asked, as
// flock does: a sender's check that took it may ask again.
func (l *fileLock) TryLock() (bool, error) {
	if l.held {
		return true, nil
	}
	ok, err := shm.TryLockFile(l.f)
	l.held = ok
	return ok, err
}

func (l *fileLock) Unlock() error {
	l.held = false
	return shm.UnlockFile(l.f)
}

func (l *fileLock) Close() error { return l.f.Close() }

// createRegion creates (or opens, left over from a primary whose
// secondaries still hold it) the named mapping for a new primary.
func (f *files) createRegion(size int) (mapping, error) {
	if err := f.ensureSecret(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLockUnavailable, err)
	}
	name := f.object + ".shm"
	r, err := shm.OpenMapping(name, size, f.perm, true)
	if errors.Is(err, windows.ERROR_ACCESS_DENIED) && f.shared {
		return nil, fmt.Errorf("%w: creating %s needs SeCreateGlobalPrivilege (an elevated or service process); use another scope: %w",
			ErrLockUnavailable, name, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLockUnavailable, err)
	}
	return r, nil
}

// restoreRegion has nothing to do: nobody can resize a page-file mapping.
func (f *files) restoreRegion(int) {}

// openRegion maps the primary's region for a secondary.
func (f *files) openRegion(size int) (mapping, error) {
	ok, err := f.readSecret()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLockUnavailable, err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s has no secret yet", handoff.ErrNotReady, f.lockPath)
	}
	r, err := shm.OpenMapping(f.object+".shm", size, f.perm, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %w", handoff.ErrNotReady, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLockUnavailable, err)
	}
	return r, nil
}

// doorbell returns the event of word: the primary's (slot < 0) or a slot's.
func (f *files) doorbell(word *uint32, kind uint32, slot int, wait bool) (shm.Doorbell, error) {
	if kind != bellEvent {
		return nil, fmt.Errorf("%w: doorbell kind %d on windows", ErrIncompatible, kind)
	}
	name := f.object + ".bell"
	if slot >= 0 {
		name = fmt.Sprintf("%s.s%02d", f.object, slot)
	}
	return shm.OpenEventBell(word, name, f.perm, wait)
}

// serveDoorbell returns the event on which an idle Serve waits (see
// Instance.serveBell).
func (f *files) serveDoorbell(word *uint32, kind uint32, wait bool) (shm.Doorbell, error) {
	if kind != bellEvent {
		return nil, fmt.Errorf("%w: doorbell kind %d on windows", ErrIncompatible, kind)
	}
	return shm.OpenEventBell(word, f.object+".serve", f.perm, wait)
}

// processAlive reports whether pid still runs. A process we may not open
// exists.
func processAlive(pid int) bool {
	if pid <= 0 {
		return true
	}
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, uint32(pid))
	if err != nil {
		return !errors.Is(err, windows.ERROR_INVALID_PARAMETER)
	}
	defer windows.CloseHandle(h)
	var code uint32
	if err := windows.GetExitCodeProcess(h, &code); err != nil {
		return true
	}
	return code == 259 // STILL_ACTIVE
}

// allowForeground lets the primary take the focus: Windows gives it only to
// the foreground process and those it allows.
func allowForeground(pid int) {
	if foregroundPID(pid) {
		winapi.AllowSetForegroundWindow(uint32(pid))
	}
}

// foregroundPID reports whether pid, read from the region, names one
// process: not 0, and not ASFW_ANY (0xFFFFFFFF, every process), which a
// region written by another user (ScopeMachine's) could otherwise hold,
// cut from a larger number or not.
func foregroundPID(pid int) bool { return pid > 0 && uint64(pid) < 0xFFFFFFFF }
