//go:build (!unix && !windows) || aix

package instance

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/go-instance/instance/shm"
)

// Systems other than Unix and Windows, and AIX, which has no flock, are not
// supported: Acquire reports errors.ErrUnsupported.

var defaultBell uint32

type files struct{}

func openFiles(*config, string) (*files, error) {
	return nil, fmt.Errorf("instance: %s is not supported: %w", runtime.GOOS, errors.ErrUnsupported)
}

func (*files) openLock() (ownerLock, error)      { return nil, errors.ErrUnsupported }
func (*files) createRegion(int) (mapping, error) { return nil, errors.ErrUnsupported }
func (*files) openRegion(int) (mapping, error)   { return nil, errors.ErrUnsupported }
func (*files) restoreRegion(int)                 {}
func (*files) confirmLock() (bool, error)        { return false, nil }
func (*files) doorbell(*uint32, uint32, int, bool) (shm.Doorbell, error) {
	return nil, errors.ErrUnsupported
}
func (*files) serveDoorbell(*uint32, uint32, bool) (shm.Doorbell, error) {
	return nil, errors.ErrUnsupported
}
func processAlive(int) bool { return false }
func allowForeground(int)   {}
