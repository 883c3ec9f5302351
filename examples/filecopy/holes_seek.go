//go:build linux || darwin || freebsd

package main

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// nextData returns the first range [start, end) of f's data at or after
// off, skipping holes (lseek SEEK_DATA and SEEK_HOLE); start is size when
// only holes follow. Where the file system cannot tell, the rest of the
// file is data.
func nextData(f *os.File, off, size int64) (start, end int64, err error) {
	start, err = f.Seek(off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return size, size, nil
	}
	if err != nil || start < off {
		return off, size, nil
	}
	end, err = f.Seek(start, unix.SEEK_HOLE)
	if err != nil || end <= start {
		return start, size, nil
	}
	return min(start, size), min(end, size), nil
}
