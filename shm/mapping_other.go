//go:build !windows

package shm

import (
	"errors"
	"io/fs"
)

// Named kernel objects are a Windows mechanism; Unix names files instead.

func openMapping(string, int, fs.FileMode, bool) (*Region, error) { return nil, errors.ErrUnsupported }

func openEventBell(*uint32, string, fs.FileMode, bool) (Doorbell, error) {
	return nil, errors.ErrUnsupported
}
