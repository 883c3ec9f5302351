package baseline

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/windows"
)

// Name is the transport the other libraries use on Windows (Qt's
// QLocalSocket, Chromium's and Electron's singleton): a named pipe.
const Name = "named pipe"

// pipeName names the pipe of the server in dir.
func pipeName(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return `\\.\pipe\instance-bench-` + hex.EncodeToString(sum[:8])
}

// pipeListener has one instance of the pipe waiting for a client at a
// time, as a server that accepts in a loop does.
type pipeListener struct {
	name string
	mu   sync.Mutex
	next windows.Handle
	done bool
}

// Listen makes the pipe of dir.
func Listen(dir string) (Listener, error) {
	l := &pipeListener{name: pipeName(dir)}
	h, err := l.instance(windows.FILE_FLAG_FIRST_PIPE_INSTANCE)
	if err != nil {
		return nil, err
	}
	l.next = h
	return l, nil
}

func (l *pipeListener) instance(flags uint32) (windows.Handle, error) {
	name, err := windows.UTF16PtrFromString(l.name)
	if err != nil {
		return 0, err
	}
	h, err := windows.CreateNamedPipe(name, windows.PIPE_ACCESS_DUPLEX|flags,
		windows.PIPE_TYPE_BYTE|windows.PIPE_READMODE_BYTE|windows.PIPE_WAIT,
		windows.PIPE_UNLIMITED_INSTANCES, 4096, 4096, 0, nil)
	if err != nil {
		return 0, os.NewSyscallError("CreateNamedPipe", err)
	}
	return h, nil
}

// Accept waits for a client on the waiting instance, and makes the next
// one before it returns.
func (l *pipeListener) Accept() (io.ReadWriteCloser, error) {
	l.mu.Lock()
	h := l.next
	l.mu.Unlock()
	err := windows.ConnectNamedPipe(h, nil)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		windows.CloseHandle(h)
		return nil, errors.New("listener closed")
	}
	if err != nil && !errors.Is(err, windows.ERROR_PIPE_CONNECTED) {
		windows.CloseHandle(h)
		return nil, os.NewSyscallError("ConnectNamedPipe", err)
	}
	if l.next, err = l.instance(0); err != nil {
		windows.CloseHandle(h)
		return nil, err
	}
	return os.NewFile(uintptr(h), l.name), nil
}

// Close ends a pending Accept by connecting to it.
func (l *pipeListener) Close() error {
	l.mu.Lock()
	l.done = true
	l.mu.Unlock()
	if c, err := dialPipe(l.name); err == nil {
		c.Close()
	}
	return nil
}

// Dial connects to the pipe of dir.
func Dial(dir string) (io.ReadWriteCloser, error) { return dialPipe(pipeName(dir)) }

// dialPipe connects to the pipe name, waiting while every instance is
// busy.
func dialPipe(name string) (io.ReadWriteCloser, error) {
	p, err := windows.UTF16PtrFromString(name)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		h, err := windows.CreateFile(p, windows.GENERIC_READ|windows.GENERIC_WRITE, 0, nil, windows.OPEN_EXISTING, 0, 0)
		if err == nil {
			return os.NewFile(uintptr(h), name), nil
		}
		// Busy, or between one instance and the next.
		if !errors.Is(err, windows.ERROR_PIPE_BUSY) && !errors.Is(err, windows.ERROR_FILE_NOT_FOUND) || time.Now().After(deadline) {
			return nil, &os.PathError{Op: "open", Path: name, Err: err}
		}
		time.Sleep(50 * time.Microsecond)
	}
}
