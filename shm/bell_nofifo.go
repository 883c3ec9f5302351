//go:build !unix

package shm

import (
	"errors"
	"io/fs"
)

func openFIFOBell(*uint32, string, fs.FileMode, bool) (Doorbell, error) {
	return nil, errors.ErrUnsupported
}
