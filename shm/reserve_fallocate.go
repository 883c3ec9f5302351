//go:build linux

package shm

import (
	"os"

	"golang.org/x/sys/unix"
)

// reserve gives a new region's file its memory or blocks now, so that a
// full file system (a small tmpfs, say) fails Create rather than a later
// write into the mapping, which would fault. A file system without
// fallocate keeps the file sparse.
func reserve(f *os.File, size int) error {
	err := control(f, func(fd int) error {
		for {
			err := unix.Fallocate(fd, 0, 0, int64(size))
			if err != unix.EINTR {
				return err
			}
		}
	})
	if err == nil || err == unix.EOPNOTSUPP {
		return nil
	}
	return &os.PathError{Op: "fallocate", Path: f.Name(), Err: err}
}
