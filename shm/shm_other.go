//go:build !unix && !windows

package shm

import (
	"errors"
	"os"
)

var granularity = 4096

func mapFile(*os.File, int64, int, bool) (*Region, error) { return nil, errors.ErrUnsupported }
func (r *Region) flush() error                            { return errors.ErrUnsupported }
func (r *Region) unmap() error                            { return errors.ErrUnsupported }
