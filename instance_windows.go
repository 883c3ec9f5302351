//go:build windows

package instance

import (
	"encoding/hex"
	"errors"
	"fmt"
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
// Outside machine scope, an object's name ends with a secret that the lock
// file keeps, 16 random bytes that a primary writes: another user in the
// session, who may make objects under any name in Local\, cannot read the
// file (its DACL is the user's, and so is its directory), so cannot know
// the names to make them first (squat them) and keep the user's launches
// from their primary. Names can be listed while their objects exist, so a
// primary makes all of them at its start and holds them to its end, and a
// new primary that finds one made by another user writes a new secret. In
// a directory of WithDir's that others may write, another user who made
// the lock file first can keep the user's launches from a primary, as on
// Unix, but still not read or inject messages: the objects are the user's
// (see CheckOwner). Machine scope, whose objects every user may use, has
// no secret.
type files struct {
	lockPath string
	prefix   string      // Local\ or Global\ name, without the secret
	object   string      // prefix and secret, once readSecret has read it
	shared   bool        // machine scope: objects open to every user
	perm     fs.FileMode // 0o600, or 0o666 when shared
	slots    int         // the region's, for the names to hold
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
	f := &files{perm: 0o600, slots: c.layout.Slots}
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
	if f.shared {
		f.object = f.prefix
	}
	return f, nil
}

// confirmLock, for a launch that took the lock, refuses a lock file that
// is a symbolic link or junction, or a directory: the primary would write
// its secret there. A secondary need not ask (it costs Wine a call to its
// server, as much as the read of the secret): a primary has asked, and a
// file that someone else holds locked, link or not, gets the secondary no
// further than another user's lock file would (see files). Nothing more
// to confirm: the directory is not guessed (it is the profile's, or
// WithDir's), and the lock file cannot be removed while it is open (see
// the Unix files).
func (f *files) confirmLock() (moved bool, err error) {
	var info fileAttributeTagInfo
	if err := windows.GetFileInformationByHandleEx(windows.Handle(f.lock.f.Fd()), windows.FileAttributeTagInfo,
		(*byte)(unsafe.Pointer(&info)), uint32(unsafe.Sizeof(info))); err != nil {
		return false, fmt.Errorf("%w: %w", ErrLockUnavailable, &fs.PathError{Op: "stat", Path: f.lockPath, Err: err})
	}
	if info.FileAttributes&(windows.FILE_ATTRIBUTE_REPARSE_POINT|windows.FILE_ATTRIBUTE_DIRECTORY) != 0 {
		return false, fmt.Errorf("%w: %w", ErrLockUnavailable,
			&fs.PathError{Op: "open", Path: f.lockPath, Err: errors.New("is a symbolic link, junction or directory")})
	}
	return false, nil
}

// openLock opens the lock file without following a reparse point
// (symbolic link or junction), not inheritable, readable (LockFileEx and
// the secret need no more) and shareable, so that every launch can open
// it.
func (f *files) openLock() (ownerLock, error) {
	path16, err := windows.UTF16PtrFromString(extendedPath(f.lockPath))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidName, err)
	}
	const share = windows.FILE_SHARE_READ | windows.FILE_SHARE_WRITE
	const flags = windows.FILE_ATTRIBUTE_NORMAL | windows.FILE_FLAG_OPEN_REPARSE_POINT
	// Usually the file exists: its DACL, which only a file made now gets,
	// need not be built.
	h, err := windows.CreateFile(path16, windows.GENERIC_READ, share, nil, windows.OPEN_EXISTING, flags, 0)
	if errors.Is(err, windows.ERROR_FILE_NOT_FOUND) {
		var sa *windows.SecurityAttributes
		if sa, err = winapi.SecurityAttributes(f.shared); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrLockUnavailable, err)
		}
		h, err = windows.CreateFile(path16, windows.GENERIC_READ, share, sa, windows.OPEN_ALWAYS, flags, 0)
	}
	if err != nil && !errors.Is(err, windows.ERROR_ALREADY_EXISTS) {
		return nil, fmt.Errorf("%w: %w", ErrLockUnavailable, &fs.PathError{Op: "open", Path: f.lockPath, Err: err})
	}
	f.lock = &fileLock{f: os.NewFile(uintptr(h), f.lockPath)}
	return f.lock, nil
}

// readSecret names the objects with the lock file's secret, and reports
// false if the file has none yet. It reads at an offset with ReadFile
// itself: os.File's ReadAt also saves and restores the file's position,
// which costs Wine 40 µs more.
func (f *files) readSecret() (bool, error) {
	var b [secretLen]byte
	var n uint32
	err := windows.ReadFile(windows.Handle(f.lock.f.Fd()), b[:], &n, &windows.Overlapped{Offset: secretAt})
	if n < secretLen || b == ([secretLen]byte{}) {
		if err != nil && !errors.Is(err, windows.ERROR_HANDLE_EOF) {
			return false, &fs.PathError{Op: "read", Path: f.lockPath, Err: err}
		}
		return false, nil // a primary writing it, or none has yet
	}
	f.object = f.prefix + "-" + hex.EncodeToString(b[:])
	return true, nil
}

// ensureSecret, for a primary, reads the lock file's secret, or writes
// one if it has none or fresh is set.
func (f *files) ensureSecret(fresh bool) error {
	if !fresh {
		if ok, err := f.readSecret(); ok || err != nil {
			return err
		}
	}
	if err := f.writeSecret(); err != nil {
		return err
	}
	if ok, err := f.readSecret(); !ok || err != nil {
		return fmt.Errorf("%s: secret not kept: %w", f.lockPath, err)
	}
	return nil
}

// writeSecret writes a new secret through a handle of its own: the
// launches' is read-only, so that a lock file they may only read still
// serves them. It writes only into the file it holds locked, and of one
// link: not through a name replaced since, nor into a file of the user's
// that another one linked here.
func (f *files) writeSecret() error {
	var b [secretLen]byte
	if err := winapi.ProcessPrng(&b[0], uintptr(len(b))); err != nil {
		return os.NewSyscallError("ProcessPrng", err)
	}
	path16, err := windows.UTF16PtrFromString(extendedPath(f.lockPath))
	if err != nil {
		return err
	}
	h, err := windows.CreateFile(path16, windows.GENERIC_WRITE, windows.FILE_SHARE_READ|windows.FILE_SHARE_WRITE, nil,
		windows.OPEN_EXISTING, windows.FILE_ATTRIBUTE_NORMAL|windows.FILE_FLAG_OPEN_REPARSE_POINT, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: f.lockPath, Err: err}
	}
	w := os.NewFile(uintptr(h), f.lockPath)
	defer w.Close()
	var held, opened windows.ByHandleFileInformation
	if err := windows.GetFileInformationByHandle(windows.Handle(f.lock.f.Fd()), &held); err != nil {
		return &fs.PathError{Op: "stat", Path: f.lockPath, Err: err}
	}
	if err := windows.GetFileInformationByHandle(h, &opened); err != nil {
		return &fs.PathError{Op: "stat", Path: f.lockPath, Err: err}
	}
	switch {
	case opened.VolumeSerialNumber != held.VolumeSerialNumber || opened.FileIndexHigh != held.FileIndexHigh || opened.FileIndexLow != held.FileIndexLow:
		return &fs.PathError{Op: "open", Path: f.lockPath, Err: errors.New("replaced since it was locked")}
	case opened.NumberOfLinks != 1:
		return &fs.PathError{Op: "open", Path: f.lockPath, Err: fmt.Errorf("has %d hard links", opened.NumberOfLinks)}
	}
	_, err = w.WriteAt(b[:], secretAt)
	return err
}

// extendedPath gives a long absolute path the \\?\ prefix, without which
// CreateFile refuses one of MAX_PATH (260) characters or more, unless the
// program declares itself aware of long paths and the system allows them.
// The prefix also turns off the cleaning of the path (of a trailing dot or
// space in a name, say), so shorter paths go without it, as in package os.
func extendedPath(p string) string {
	const short = 248 // a directory's limit, which os keeps to as well
	switch {
	case len(p) < short, strings.HasPrefix(p, `\\?\`), strings.HasPrefix(p, `\\.\`):
		return p
	case strings.HasPrefix(p, `\\`):
		return `\\?\UNC\` + p[2:]
	case len(p) >= 3 && p[1] == ':' && p[2] == '\\':
		return `\\?\` + p
	}
	return p
}

// fileAttributeTagInfo is FILE_ATTRIBUTE_TAG_INFO: a file's attributes
// alone (GetFileInformationByHandle also asks for the volume's serial
// number, which costs Wine half a millisecond).
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
// secondaries still hold it) the named mapping for a new primary, and
// makes its events.
func (f *files) createRegion(size int) (mapping, error) {
	for fresh := false; ; fresh = true {
		if !f.shared {
			if err := f.ensureSecret(fresh); err != nil {
				return nil, fmt.Errorf("%w: %w", ErrLockUnavailable, err)
			}
		}
		m, err := f.createObjects(size)
		// Another user saw the names (they can be listed) and made one of
		// them once they were gone, with a DACL that lets us in or not
		// (ours always does): take new ones.
		squatted := errors.Is(err, winapi.ErrNotOwner) || !f.shared && errors.Is(err, windows.ERROR_ACCESS_DENIED)
		if squatted && !fresh {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrLockUnavailable, err)
		}
		return m, nil
	}
}

// createObjects makes the primary's objects: outside machine scope every
// event too, held until the region is closed, so that no other user can
// make one of them first.
func (f *files) createObjects(size int) (mapping, error) {
	m := &heldMapping{}
	if !f.shared {
		names := []string{f.object + ".bell", f.object + ".serve"}
		for i := range f.slots {
			names = append(names, fmt.Sprintf("%s.s%02d", f.object, i))
		}
		for _, name := range names {
			h, err := winapi.CreateEvent(name, false)
			if err != nil {
				m.Close()
				return nil, err
			}
			m.held = append(m.held, h)
		}
	}
	name := f.object + ".shm"
	r, err := shm.OpenMapping(name, size, f.perm, true)
	if errors.Is(err, windows.ERROR_ACCESS_DENIED) && f.shared {
		return nil, fmt.Errorf("creating %s needs SeCreateGlobalPrivilege (an elevated or service process); use another scope: %w", name, err)
	}
	if err != nil {
		m.Close()
		return nil, err
	}
	m.Region = r
	return m, nil
}

// heldMapping is a primary's region, and the events it made at its start.
type heldMapping struct {
	*shm.Region
	held []windows.Handle
}

func (m *heldMapping) Close() error {
	var err error
	if m.Region != nil {
		err = m.Region.Close()
	}
	for _, h := range m.held {
		windows.CloseHandle(h)
	}
	return err
}

// restoreRegion has nothing to do: nobody can resize a page-file mapping.
func (f *files) restoreRegion(int) {}

// openRegion maps the primary's region for a secondary.
func (f *files) openRegion(size int) (mapping, error) {
	if !f.shared {
		ok, err := f.readSecret()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrLockUnavailable, err)
		}
		if !ok {
			return nil, fmt.Errorf("%w: %s has no secret yet", handoff.ErrNotReady, f.lockPath)
		}
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
