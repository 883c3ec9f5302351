//go:build !unix && !windows

package shm

import (
	"errors"
	"os"
)

func create(string, int) (*Region, error)              { return nil, errors.ErrUnsupported }
func open(string) (*Region, error)                     { return nil, errors.ErrUnsupported }
func remove(string) error                              { return errors.ErrUnsupported }
func openMutexFile(string) (*os.File, error)           { return nil, errors.ErrUnsupported }
func mutexPath(string) (string, error)                 { return "", errors.ErrUnsupported }
func openBell(*uint32, string, bool) (Doorbell, error) { return nil, errors.ErrUnsupported }
