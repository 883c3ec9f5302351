//go:build linux

package shm

import (
	"errors"
	"time"

	"github.com/go-instance/instance/internal/futex"
)

type futexBell struct {
	word *uint32
	set  uint32
}

func newFutexBell(word *uint32) (Doorbell, error) { return futexBell{word, futex.AnySet}, nil }

func newFutexBellSet(word *uint32, set uint32) (Doorbell, error) {
	if set == 0 {
		return nil, errors.New("shm: futex bell of an empty set")
	}
	return futexBell{word, set}, nil
}

func (b futexBell) Wait(old uint32, timeout time.Duration) error {
	return futex.Wait(b.word, old, b.set, timeout)
}

func (b futexBell) Ring() error { return futex.Wake(b.word, b.set) }

func (futexBell) Close() error { return nil }
