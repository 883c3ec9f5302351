//go:build windows

package shm

import (
	"errors"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-instance/instance/internal/winapi"
	"golang.org/x/sys/windows"
)

// eventBell is a named auto-reset event: SetEvent releases one waiter, or
// the next one to wait. A left-over signal only makes a Wait return early.
type eventBell struct {
	word *uint32
	name string
	perm fs.FileMode

	mu     sync.Mutex
	h      windows.Handle // set before Wait for a waiter; opened by Ring for a ringer
	waiter bool
	closed bool
}

func openEventBell(word *uint32, name string, perm fs.FileMode, wait bool) (Doorbell, error) {
	b := &eventBell{word: word, name: name, perm: perm, waiter: wait}
	if !wait {
		return b, nil
	}
	h, err := winapi.CreateEvent(name, perm&0o077 != 0)
	if err != nil {
		return nil, err
	}
	b.h = h
	return b, nil
}

func (b *eventBell) Wait(old uint32, timeout time.Duration) error {
	if atomic.LoadUint32(b.word) != old {
		return nil
	}
	if !b.waiter || b.h == 0 {
		return &os.PathError{Op: "wait", Path: b.name, Err: errors.New("bell closed or opened to ring only")}
	}
	ms := uint32(windows.INFINITE)
	if timeout >= 0 {
		ms = uint32(millis(timeout, windows.INFINITE-1))
	}
	ev, err := windows.WaitForSingleObject(b.h, ms)
	if ev == windows.WAIT_FAILED {
		return &os.PathError{Op: "WaitForSingleObject", Path: b.name, Err: err}
	}
	return nil
}

func (b *eventBell) Ring() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return &os.PathError{Op: "ring", Path: b.name, Err: os.ErrClosed}
	}
	if b.h == 0 {
		name16, err := windows.UTF16PtrFromString(b.name)
		if err != nil {
			return &os.PathError{Op: "OpenEvent", Path: b.name, Err: err}
		}
		h, err := windows.OpenEvent(windows.EVENT_MODIFY_STATE, false, name16)
		if err != nil {
			if errors.Is(err, windows.ERROR_FILE_NOT_FOUND) {
				return nil // no waiter has made it: nobody waits
			}
			return &os.PathError{Op: "OpenEvent", Path: b.name, Err: err}
		}
		b.h = h
	}
	return os.NewSyscallError("SetEvent", windows.SetEvent(b.h))
}

// Close releases the event's handle. It must not run while Wait does.
func (b *eventBell) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.h == 0 {
		return nil
	}
	err := windows.CloseHandle(b.h)
	b.h = 0
	return os.NewSyscallError("CloseHandle", err)
}
