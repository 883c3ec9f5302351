//go:build !unix && !windows

package shm

import (
	"errors"
	"os"
)

func mapFile(*os.File, int, bool) (*Region, error) { return nil, errors.ErrUnsupported }
func (r *Region) flush() error                     { return errors.ErrUnsupported }
func (r *Region) unmap() error                     { return errors.ErrUnsupported }
