//go:build !unix

package shm

import (
	"errors"
	"io/fs"
	"os"
)

func mapFile(*os.File, int, bool) (*Region, error) { return nil, errors.ErrUnsupported }
func (r *Region) flush() error                     { return errors.ErrUnsupported }
func (r *Region) unmap() error                     { return errors.ErrUnsupported }

func openFIFOBell(*uint32, string, fs.FileMode, bool) (Doorbell, error) {
	return nil, errors.ErrUnsupported
}
