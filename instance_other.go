//go:build !unix

package instance

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/go-instance/instance/shm"
)

// Windows has its own backend to come; until then Acquire reports
// errors.ErrUnsupported on systems other than Unix.

var defaultBell uint32

type files struct{}

func openFiles(*config, string) (*files, error) {
	return nil, fmt.Errorf("instance: %s is not supported yet: %w", runtime.GOOS, errors.ErrUnsupported)
}

func (*files) openLock() (ownerLock, error)          { return nil, errors.ErrUnsupported }
func (*files) createRegion(int) (*shm.Region, error) { return nil, errors.ErrUnsupported }
func (*files) openRegion(int) (*shm.Region, error)   { return nil, errors.ErrUnsupported }
func (*files) restoreRegion(int)                     {}
func (*files) doorbell(*uint32, uint32, int, bool) (shm.Doorbell, error) {
	return nil, errors.ErrUnsupported
}
func processAlive(int) bool { return false }
