//go:build unix

package shm

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

var granularity = unix.Getpagesize()

func mapFile(f *os.File, offset int64, size int, writable bool) (*Region, error) {
	if size <= 0 {
		return nil, fmt.Errorf("shm: map %s: size %d", f.Name(), size)
	}
	prot := unix.PROT_READ
	if writable {
		prot |= unix.PROT_WRITE
	}
	var st unix.Stat_t
	if err := fstat(f, &st); err != nil {
		return nil, err
	}
	if st.Size-offset < int64(size) {
		return nil, fmt.Errorf("shm: map %s: file is %d bytes, shorter than %d from %d", f.Name(), st.Size, size, offset)
	}
	var data []byte
	err := control(f, func(fd int) (err error) {
		data, err = unix.Mmap(fd, offset, size, prot, unix.MAP_SHARED)
		return err
	})
	if err != nil {
		return nil, &os.PathError{Op: "mmap", Path: f.Name(), Err: err}
	}
	return &Region{data: data}, nil
}

func (r *Region) flush() error {
	return os.NewSyscallError("msync", unix.Msync(r.data, unix.MS_SYNC))
}

func (r *Region) unmap() error {
	return os.NewSyscallError("munmap", unix.Munmap(r.data))
}

func fstat(f *os.File, st *unix.Stat_t) error {
	err := control(f, func(fd int) error { return unix.Fstat(fd, st) })
	if err != nil {
		return &os.PathError{Op: "fstat", Path: f.Name(), Err: err}
	}
	return nil
}

// control runs fn on f's descriptor without switching it to blocking mode,
// as f.Fd would.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}
