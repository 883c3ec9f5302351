// Package shm is named shared memory for Go: regions that processes open by
// name ([Create], [Open], [CreateOrOpen], [Remove]) or map from files
// ([OpenFile], [MapFile]); typed access to a fixed-layout struct in a
// region ([Value], with lock-free consistent snapshots); a named
// cross-process [Mutex] that the kernel releases when its holder dies; and
// doorbells, wake-ups tied to a 32-bit word of a region ([OpenBell]).
// Package instance builds on it.
//
// Named objects belong to the user that made them: on Unix they are files
// in a per-user directory ($XDG_RUNTIME_DIR/go-instance, else
// go-instance-<uid> under $TMPDIR, /dev/shm on Linux or /tmp; 0700,
// verified before use) and persist until removed; on Windows regions and
// bells are Local\ kernel objects (per session) whose names carry a hash
// of the user's SID, with a DACL for the user alone, and a region vanishes
// with its last handle, while a mutex is a file in the user's
// %LocalAppData%\go-instance.
//
// # Linux
//
// Regions are files mapped MAP_SHARED (tmpfs under $XDG_RUNTIME_DIR or
// /dev/shm),
// mutexes are flock(2) on a file, and the doorbell is a futex on the word
// itself (not process-private, so it works across processes that map the
// same file).
//
// # macOS, FreeBSD and other Unix systems
//
// Regions and mutexes as on Linux; the doorbell is a FIFO in the per-user
// directory ([OpenFIFOBell]), which Linux can use too. AIX, which lacks
// flock, is not supported.
//
// # Windows
//
// Named regions are file mappings backed by the page file ([OpenMapping]);
// [MapFile] and [OpenFile] map files. Mutexes are LockFileEx on a file in
// %LocalAppData%\go-instance, and the doorbell is a named auto-reset event
// ([OpenEventBell]).
package shm

import (
	"fmt"
	"io/fs"
	"os"
	"time"
)

// Region is a shared mapping of a file or of a named object.
type Region struct {
	data   []byte
	handle uintptr // Windows: the file-mapping object
}

// MapFile maps size bytes of f from offset, shared with every other process
// that maps the same file. offset must be a multiple of [Granularity], and
// the file at least offset+size bytes long. The mapping stays valid after f
// is closed; Close unmaps it. A read-only mapping (writable false) faults
// on write.
func MapFile(f *os.File, offset int64, size int, writable bool) (*Region, error) {
	if offset < 0 || offset%int64(Granularity()) != 0 {
		return nil, fmt.Errorf("shm: map %s: offset %d is not a multiple of %d", f.Name(), offset, Granularity())
	}
	return mapFile(f, offset, size, writable)
}

// Granularity is what a mapping's offset in its file must be a multiple
// of: the page size on Unix, the allocation granularity (64 KiB) on
// Windows.
func Granularity() int { return granularity }

// Bytes returns the mapped memory. It must not be used after Close.
func (r *Region) Bytes() []byte { return r.data }

// Size is the length of the mapping.
func (r *Region) Size() int { return len(r.data) }

// Flush writes changes of a file-backed mapping through to the file. An
// empty or closed region has nothing to flush.
func (r *Region) Flush() error {
	if len(r.data) == 0 {
		return nil
	}
	return r.flush()
}

// Close unmaps the region. Further use of Bytes faults.
func (r *Region) Close() error {
	if r.data == nil {
		return nil
	}
	err := r.unmap()
	r.data = nil
	return err
}

// TryLockFile takes an exclusive lock on the open file f without waiting.
// It reports false if another open file holds the lock. The kernel drops
// the lock when f is closed or its process exits, however it exits. Asked
// again through f while it holds the lock, it reports true on Unix (flock:
// the same lock) but false on Windows (LockFileEx: locks do not overlap).
func TryLockFile(f *os.File) (bool, error) { return tryLockFile(f) }

// UnlockFile releases a lock taken by TryLockFile. Without one it does
// nothing on Unix and fails on Windows (ERROR_NOT_LOCKED).
func UnlockFile(f *os.File) error { return unlockFile(f) }

// Doorbell wakes the waiters on one 32-bit word of a region.
type Doorbell interface {
	// Wait returns when the word may no longer equal old, when the bell
	// rings, or once timeout has passed (a negative timeout waits
	// without limit). It may return early; callers re-read the word.
	Wait(old uint32, timeout time.Duration) error
	// Ring wakes the waiters, if any.
	Ring() error
	// Close releases what the bell holds open.
	Close() error
}

// millis is timeout in milliseconds, rounded up (a wait must not end
// early by its own doing) and at most most, the longest that the system
// call takes: a longer wait returns at that, as Wait may.
func millis(timeout time.Duration, most int64) int64 {
	ms := int64(timeout / time.Millisecond)
	if timeout%time.Millisecond != 0 {
		ms++
	}
	return min(ms, most)
}

// NewFutexBell returns a doorbell that waits on the word itself (Linux
// futex). The word must lie in a shared mapping.
func NewFutexBell(word *uint32) (Doorbell, error) { return newFutexBell(word) }

// NewFutexBellSet is NewFutexBell for one set of the word's waiters, a
// bitmask: its Wait waits as a member of set, and its Ring wakes only the
// waiters whose set shares a bit with set. NewFutexBell's bell belongs to
// every set, and its Ring wakes every waiter.
func NewFutexBellSet(word *uint32, set uint32) (Doorbell, error) { return newFutexBellSet(word, set) }

// OpenMapping maps the named, page-file-backed mapping name (Windows:
// Local\ or Global\ names). With create set it is made with size bytes if
// missing, with a DACL for the current user alone unless perm has group or
// other bits; otherwise a missing one is an error matching
// [fs.ErrNotExist]. Other systems return [errors.ErrUnsupported].
func OpenMapping(name string, size int, perm fs.FileMode, create bool) (*Region, error) {
	return openMapping(name, size, perm, create)
}

// OpenEventBell returns a doorbell for word made of the named auto-reset
// event name (Windows). A waiter (wait set) creates the event if missing,
// with a DACL as for OpenMapping; a ringer opens it when it first rings,
// and ringing an event nobody created does nothing. Other systems return
// [errors.ErrUnsupported].
func OpenEventBell(word *uint32, name string, perm fs.FileMode, wait bool) (Doorbell, error) {
	return openEventBell(word, name, perm, wait)
}

// OpenFIFOBell returns a doorbell for word made of the FIFO at path. With
// wait set, the caller is the waiter: the FIFO is created with perm if
// missing and its read end held open. Otherwise the bell only rings, which
// does nothing while nobody waits. A path that is not a FIFO, or (for a perm
// without group or other bits) not owned by the caller, is refused. Its
// Wait reads the word before it sleeps: on a file-backed region that
// another process may truncate, that read faults (SIGBUS), so wait where
// such a fault is recovered ([runtime/debug.SetPanicOnFault]).
func OpenFIFOBell(word *uint32, path string, perm fs.FileMode, wait bool) (Doorbell, error) {
	return openFIFOBell(word, path, perm, wait)
}
