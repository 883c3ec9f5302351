package shm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"
)

// ErrInvalidName reports a name that is not acceptable. The names of
// regions, mutexes and bells are 1 to 128 ASCII letters, digits, '.', '_'
// and '-', not starting with '.' or '-'. Names that differ only in case,
// or in a trailing '.', may name one object where it is a file on a file
// system that ignores these (macOS's usual one; on Windows, a mutex).
var ErrInvalidName = errors.New("shm: invalid name")

func checkName(name string) error {
	if name == "" || len(name) > 128 || name[0] == '.' || name[0] == '-' {
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	for i, c := range name {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: %q has %q at byte %d; use letters, digits, '.', '_' and '-'", ErrInvalidName, name, c, i)
		}
	}
	return nil
}

// Create makes the named region name, of size bytes (zeroed). It fails with
// an error matching [fs.ErrExist] if the name is taken.
//
// On Unix the region is a file and persists until [Remove]; on Windows it
// is backed by the page file and vanishes with its last handle. Its memory
// is reserved at once on Linux (fallocate) and Windows, so that a full
// file system or page file fails Create; elsewhere the file is sparse, and
// a write that finds no room faults (see [runtime/debug.SetPanicOnFault]).
func Create(name string, size int) (*Region, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if size <= 0 {
		return nil, fmt.Errorf("shm: create %s: size %d", name, size)
	}
	return create(name, size)
}

// Open maps the existing named region name. It fails with an error
// matching [fs.ErrNotExist] if there is none. On Windows the size is that of
// the mapping rounded up to whole pages.
func Open(name string) (*Region, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	return open(name)
}

// CreateOrOpen opens the named region name, or creates it with size bytes
// if it does not exist. An existing region keeps its own size; size must
// be positive all the same.
func CreateOrOpen(name string, size int) (*Region, error) {
	for {
		r, err := Create(name, size)
		if !errors.Is(err, fs.ErrExist) {
			return r, err
		}
		r, err = Open(name)
		if !errors.Is(err, fs.ErrNotExist) {
			return r, err
		}
		// Removed between the two: try again.
	}
}

// Remove removes the name of a region (Unix); mappings stay valid until
// closed. On Windows names vanish with their last handle and Remove does
// nothing.
func Remove(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	return remove(name)
}

// Mode is how OpenFile maps a file.
type Mode int

const (
	ReadOnly  Mode = iota // a read-only mapping: writes fault
	ReadWrite             // a shared, writable mapping: writes reach the file
)

// OpenFile maps the whole of the file at path. An empty file gives an empty
// region. Changes to a ReadWrite mapping reach the file (Flush waits for
// them to be written). A directory, FIFO or socket is refused before it is
// opened (opening a FIFO would wait for a writer).
func OpenFile(path string, mode Mode) (*Region, error) {
	flag := os.O_RDONLY
	if mode == ReadWrite {
		flag = os.O_RDWR
	} else if mode != ReadOnly {
		return nil, fmt.Errorf("shm: open %s: unknown mode %d", path, mode)
	}
	if st, err := os.Stat(path); err != nil {
		return nil, err
	} else if t := st.Mode().Type(); t&(fs.ModeDir|fs.ModeNamedPipe|fs.ModeSocket) != 0 {
		return nil, &fs.PathError{Op: "map", Path: path, Err: fmt.Errorf("is a %s, not a file", typeName(t))}
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() == 0 {
		return &Region{}, nil
	}
	if st.Size() > int64(maxInt) {
		return nil, fmt.Errorf("shm: open %s: %d bytes do not fit in memory at once; map it in windows with MapFile", path, st.Size())
	}
	return MapFile(f, 0, int(st.Size()), mode == ReadWrite)
}

const maxInt = int(^uint(0) >> 1)

func typeName(t fs.FileMode) string {
	switch {
	case t&fs.ModeDir != 0:
		return "directory"
	case t&fs.ModeNamedPipe != 0:
		return "FIFO"
	}
	return "socket"
}

// Mutex is a named lock shared between processes. The kernel releases it
// when its holder exits, however it exits (flock on Unix, LockFileEx on
// Windows), so a crashed holder never leaves it locked. Within a process,
// one Mutex value excludes its goroutines from each other as well; two
// values opened with the same name exclude each other like two processes.
// A held Mutex stays held until Unlock or Close even if nothing refers to
// it any more (the garbage collector would otherwise close its file, and
// with it the lock).
type Mutex struct {
	f   *os.File
	sem chan struct{} // the turn to take the file's lock: held while taking it and while it is held

	mu     sync.Mutex
	locked bool // the file's lock is held
	closed bool
}

// held keeps every held Mutex reachable.
var held sync.Map

// OpenMutex opens (creating if needed) the named mutex name.
func OpenMutex(name string) (*Mutex, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	f, err := openMutexFile(name)
	if err != nil {
		return nil, err
	}
	return &Mutex{f: f, sem: make(chan struct{}, 1)}, nil
}

func (m *Mutex) errClosed(op string) error {
	return &os.PathError{Op: op, Path: m.f.Name(), Err: os.ErrClosed}
}

// take runs lock, which takes the file's lock, in the caller's turn (sem
// held) and records the outcome. A Close meanwhile wins: the lock, if
// lock took it, went with the file.
func (m *Mutex) take(lock func() error) error {
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	err := m.errClosed("lock")
	if !closed {
		err = lock()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		err = m.errClosed("lock") // what lock met, if anything, came of the Close
	}
	if err != nil {
		<-m.sem
		return err
	}
	m.locked = true
	held.Store(m, nil)
	return nil
}

// Lock waits for the mutex and takes it.
func (m *Mutex) Lock() error {
	m.sem <- struct{}{}
	return m.take(func() error { return lockFile(m.f) })
}

// errBusy: another process holds the mutex.
var errBusy = errors.New("busy")

// TryLock takes the mutex if it is free and reports whether it did.
func (m *Mutex) TryLock() (bool, error) {
	select {
	case m.sem <- struct{}{}:
	default:
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.closed {
			return false, m.errClosed("lock")
		}
		return false, nil
	}
	err := m.take(func() error {
		ok, err := tryLockFile(m.f)
		if err == nil && !ok {
			err = errBusy
		}
		return err
	})
	if err == errBusy {
		return false, nil
	}
	return err == nil, err
}

// LockContext is Lock that gives up when ctx is done, with ctx's error.
// While another process holds the mutex it re-tries at growing intervals
// (1 to 16 ms): no system call waits on a context.
func (m *Mutex) LockContext(ctx context.Context) error {
	select {
	case m.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	backoff := time.Millisecond
	return m.take(func() error {
		for {
			ok, err := tryLockFile(m.f)
			if ok || err != nil {
				return err
			}
			m.mu.Lock()
			closed := m.closed
			m.mu.Unlock()
			if closed {
				return m.errClosed("lock")
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 16*time.Millisecond)
		}
	})
}

// Unlock releases the mutex.
func (m *Mutex) Unlock() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return m.errClosed("unlock")
	}
	if !m.locked {
		m.mu.Unlock()
		return &os.PathError{Op: "unlock", Path: m.f.Name(), Err: errors.New("not locked")}
	}
	err := unlockFile(m.f)
	m.locked = false
	held.Delete(m)
	m.mu.Unlock()
	<-m.sem
	return err
}

// Close closes the mutex, releasing it if held; Lock, TryLock and Unlock
// then report an error wrapping os.ErrClosed, and Close does nothing, as a
// Region's. (On Unix the mutex's lock file stays, as a lock file must:
// removing it would let two holders in.)
func (m *Mutex) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	wasLocked := m.locked
	m.locked, m.closed = false, true
	m.mu.Unlock()
	err := m.f.Close()
	if wasLocked {
		<-m.sem // the holder's turn: the lock went with the file
	}
	held.Delete(m)
	return err
}

// OpenBell returns the named wake-up for word, which must lie in a shared
// region: on Linux a futex on the word itself; on other Unix systems a
// FIFO named after name in the per-user directory; on Windows a named
// auto-reset event. With wait set the caller waits on it; otherwise it
// rings it.
func OpenBell(word *uint32, name string, wait bool) (Doorbell, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	return openBell(word, name, wait)
}
