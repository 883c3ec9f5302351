//go:build unix && !aix && !linux && !darwin && !dragonfly && !freebsd && !netbsd && !openbsd

package instance

import "errors"

// Elsewhere (Solaris, illumos) the primary is given no notice that
// its lock file was removed: the next launch then becomes a second
// primary (see the README).
func newLockWatch() (lockWatch, error) { return nil, errors.ErrUnsupported }
