//go:build unix && !aix

package shm

import (
	"os"

	"golang.org/x/sys/unix"
)

func tryLockFile(f *os.File) (bool, error) {
	var locked bool
	err := control(f, func(fd int) error {
		for {
			err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
			switch err {
			case unix.EINTR:
				continue
			case unix.EWOULDBLOCK:
				return nil
			case nil:
				locked = true
			}
			return err
		}
	})
	if err != nil {
		return false, &os.PathError{Op: "flock", Path: f.Name(), Err: err}
	}
	return locked, nil
}

func lockFile(f *os.File) error {
	err := control(f, func(fd int) error {
		for {
			if err := unix.Flock(fd, unix.LOCK_EX); err != unix.EINTR {
				return err
			}
		}
	})
	if err != nil {
		return &os.PathError{Op: "flock", Path: f.Name(), Err: err}
	}
	return nil
}

func unlockFile(f *os.File) error {
	err := control(f, func(fd int) error { return unix.Flock(fd, unix.LOCK_UN) })
	if err != nil {
		return &os.PathError{Op: "flock", Path: f.Name(), Err: err}
	}
	return nil
}
