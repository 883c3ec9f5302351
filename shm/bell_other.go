//go:build !linux

package shm

import "errors"

func newFutexBell(*uint32) (Doorbell, error) { return nil, errors.ErrUnsupported }

func newFutexBellSet(*uint32, uint32) (Doorbell, error) { return nil, errors.ErrUnsupported }
