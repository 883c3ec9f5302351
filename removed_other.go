//go:build !unix || aix

package instance

// On Windows the lock file cannot be removed while the primary holds it
// open (it is shared for reading and writing, not for deletion), and the
// region is a page-file mapping, not a file: there is nothing to guard.
// Other systems (AIX too, which lacks flock) have no primary.
type guard struct{}

func (*Instance) startGuard() {}
func (*Instance) stopGuard()  {}
