//go:build (!unix && !windows) || aix

package shm

import (
	"errors"
	"os"
)

// AIX lacks flock(2), and fcntl locks do not exclude two opens in one
// process.

func tryLockFile(*os.File) (bool, error) { return false, errors.ErrUnsupported }
func unlockFile(*os.File) error          { return errors.ErrUnsupported }
func lockFile(*os.File) error            { return errors.ErrUnsupported }
