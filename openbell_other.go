//go:build unix && !aix && !linux

package instance

import (
	"fmt"
	"runtime"

	"github.com/go-instance/instance/shm"
)

func (f *files) serveOnOpen([]byte, bool) (shm.Doorbell, error) {
	return nil, fmt.Errorf("%w: the primary waits on a futex and inotify, which %s lacks", ErrIncompatible, runtime.GOOS)
}
