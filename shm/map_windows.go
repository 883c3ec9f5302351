//go:build windows

package shm

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"unsafe"

	"github.com/go-instance/instance/internal/winapi"
	"golang.org/x/sys/windows"
)

// The allocation granularity, 64 KiB on every Windows version and
// architecture.
const granularity = 64 << 10

func mapFile(f *os.File, offset int64, size int, writable bool) (*Region, error) {
	if size <= 0 {
		return nil, fmt.Errorf("shm: map %s: size %d", f.Name(), size)
	}
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size()-offset < int64(size) {
		return nil, fmt.Errorf("shm: map %s: file is %d bytes, shorter than %d from %d", f.Name(), st.Size(), size, offset)
	}
	prot, access := uint32(windows.PAGE_READONLY), uint32(windows.FILE_MAP_READ)
	if writable {
		prot, access = windows.PAGE_READWRITE, windows.FILE_MAP_READ|windows.FILE_MAP_WRITE
	}
	end := uint64(offset) + uint64(size)
	h, err := windows.CreateFileMapping(windows.Handle(f.Fd()), nil, prot, uint32(end>>32), uint32(end), nil)
	if h == 0 {
		return nil, &os.PathError{Op: "CreateFileMapping", Path: f.Name(), Err: err}
	}
	return view(h, access, offset, size, f.Name())
}

// view maps mapping h from offset and takes size bytes of it (all of it,
// in whole pages, when size is 0); it owns h from then on.
func view(h windows.Handle, access uint32, offset int64, size int, name string) (*Region, error) {
	addr, err := windows.MapViewOfFile(h, access, uint32(uint64(offset)>>32), uint32(offset), uintptr(size))
	if err != nil {
		windows.CloseHandle(h)
		return nil, &os.PathError{Op: "MapViewOfFile", Path: name, Err: err}
	}
	var mbi windows.MemoryBasicInformation
	if err := windows.VirtualQuery(addr, &mbi, unsafe.Sizeof(mbi)); err != nil {
		windows.UnmapViewOfFile(addr)
		windows.CloseHandle(h)
		return nil, &os.PathError{Op: "VirtualQuery", Path: name, Err: err}
	}
	n := int(mbi.RegionSize) // whole pages
	if size > 0 {
		n = min(n, size)
	}
	// addr is memory of the mapping, not of the Go heap.
	data := unsafe.Slice((*byte)(*(*unsafe.Pointer)(unsafe.Pointer(&addr))), n)
	return &Region{data: data, handle: uintptr(h)}, nil
}

func openMapping(name string, size int, perm fs.FileMode, create bool) (*Region, error) {
	if !create {
		return openExisting(name, size, perm&0o077 != 0)
	}
	r, existed, err := createMapping(name, size, perm&0o077 != 0)
	if err != nil || !existed {
		return r, err
	}
	if n := len(r.data); n < size {
		r.Close()
		return nil, &os.PathError{Op: "CreateFileMapping", Path: name,
			Err: fmt.Errorf("an existing mapping of %d bytes is shorter than %d", n, size)}
	}
	r.data = r.data[:size]
	return r, nil
}

// openExisting maps the existing mapping name: size bytes of it, or all of
// it (in whole pages) when size is 0. Unless shared, it must be the
// current user's.
func openExisting(name string, size int, shared bool) (*Region, error) {
	name16, err := windows.UTF16PtrFromString(name)
	if err != nil {
		return nil, &os.PathError{Op: "OpenFileMapping", Path: name, Err: err}
	}
	access := uint32(windows.FILE_MAP_READ | windows.FILE_MAP_WRITE)
	// READ_CONTROL, to read the owner.
	h, err := winapi.OpenFileMapping(access|windows.READ_CONTROL, false, name16)
	if err != nil {
		return nil, &os.PathError{Op: "OpenFileMapping", Path: name, Err: err}
	}
	if !shared {
		if err := winapi.CheckOwner(h); err != nil {
			windows.CloseHandle(h)
			return nil, &os.PathError{Op: "OpenFileMapping", Path: name, Err: err}
		}
	}
	return view(h, access, 0, size, name)
}

// createMapping creates the page-file-backed mapping name of size bytes, or
// opens it whole if it exists (existed is then true), with a DACL for the
// current user alone unless shared.
func createMapping(name string, size int, shared bool) (r *Region, existed bool, err error) {
	if size <= 0 {
		return nil, false, fmt.Errorf("shm: create %s: size %d", name, size)
	}
	name16, err := windows.UTF16PtrFromString(name)
	if err != nil {
		return nil, false, &os.PathError{Op: "CreateFileMapping", Path: name, Err: err}
	}
	sa, err := winapi.SecurityAttributes(shared)
	if err != nil {
		return nil, false, &os.PathError{Op: "CreateFileMapping", Path: name, Err: err}
	}
	// An existing mapping comes back as a valid handle and
	// ERROR_ALREADY_EXISTS.
	h, err := windows.CreateFileMapping(windows.InvalidHandle, sa, windows.PAGE_READWRITE,
		uint32(uint64(size)>>32), uint32(size), name16)
	if h == 0 {
		return nil, false, &os.PathError{Op: "CreateFileMapping", Path: name, Err: err}
	}
	existed = errors.Is(err, windows.ERROR_ALREADY_EXISTS)
	if existed && !shared {
		if err := winapi.CheckOwner(h); err != nil {
			windows.CloseHandle(h)
			return nil, true, &os.PathError{Op: "CreateFileMapping", Path: name, Err: err}
		}
	}
	access := uint32(windows.FILE_MAP_READ | windows.FILE_MAP_WRITE)
	// An existing mapping may be smaller than size, and MapViewOfFile
	// refuses a view past its end: map all of it, then compare.
	viewSize := size
	if existed {
		viewSize = 0
	}
	r, err = view(h, access, 0, viewSize, name)
	if err != nil {
		return nil, existed, err
	}
	return r, existed, nil
}

func (r *Region) flush() error {
	return os.NewSyscallError("FlushViewOfFile", windows.FlushViewOfFile(uintptr(unsafe.Pointer(&r.data[0])), uintptr(len(r.data))))
}

func (r *Region) unmap() error {
	err := os.NewSyscallError("UnmapViewOfFile", windows.UnmapViewOfFile(uintptr(unsafe.Pointer(&r.data[0]))))
	return errors.Join(err, os.NewSyscallError("CloseHandle", windows.CloseHandle(windows.Handle(r.handle))))
}

func tryLockFile(f *os.File) (bool, error) {
	err := windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY,
		0, 1, 0, new(windows.Overlapped))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, windows.ERROR_LOCK_VIOLATION), errors.Is(err, windows.ERROR_IO_PENDING):
		return false, nil
	}
	return false, &os.PathError{Op: "LockFileEx", Path: f.Name(), Err: err}
}

func lockFile(f *os.File) error {
	err := windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK, 0, 1, 0, new(windows.Overlapped))
	if err != nil {
		return &os.PathError{Op: "LockFileEx", Path: f.Name(), Err: err}
	}
	return nil
}

func unlockFile(f *os.File) error {
	err := windows.UnlockFileEx(windows.Handle(f.Fd()), 0, 1, 0, new(windows.Overlapped))
	if err != nil {
		return &os.PathError{Op: "UnlockFileEx", Path: f.Name(), Err: err}
	}
	return nil
}
