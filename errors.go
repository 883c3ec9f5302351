package instance

import "errors"

// Sentinel errors. Errors returned by this package wrap one of them (test
// with [errors.Is]) and carry the detail: the path, the operation, the
// limit. They are the same on every operating system.
var (
	// ErrInvalidName: the app id, key or an option is not acceptable.
	// Nothing was created.
	ErrInvalidName = errors.New("instance: invalid name")
	// ErrLockUnavailable: whether another instance runs cannot be decided,
	// because the lock cannot be taken at all (permissions, a file system
	// without locks, an unsafe directory). Distinct from another instance
	// running, which is not an error.
	ErrLockUnavailable = errors.New("instance: lock unavailable")
	// ErrTimeout: a wait ran out (the primary did not answer in time).
	// When the wait was bounded by a context, the error also wraps the
	// context's error.
	ErrTimeout = errors.New("instance: timeout")
	// ErrIncompatible: the running primary speaks another protocol version
	// or uses a mechanism this build cannot.
	ErrIncompatible = errors.New("instance: incompatible peer")
	// ErrTooLarge: the message (or a reply) is over the configured
	// maximum. Nothing was sent.
	ErrTooLarge = errors.New("instance: message too large")
	// ErrClosed: the instance was released.
	ErrClosed = errors.New("instance: closed")
)
