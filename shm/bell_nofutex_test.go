//go:build !linux

package shm_test

import (
	"errors"
	"testing"

	"github.com/go-instance/instance/shm"
)

func TestNewFutexBellUnsupported(t *testing.T) {
	var word uint32
	if b, err := shm.NewFutexBell(&word); !errors.Is(err, errors.ErrUnsupported) {
		if b != nil {
			b.Close()
		}
		t.Errorf("NewFutexBell: %v, want ErrUnsupported", err)
	}
}
