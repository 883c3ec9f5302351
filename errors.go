package instance

import "errors"

// Sentinel errors. Errors returned by this package wrap one of them (test
// with [errors.Is]) and carry the detail: the path, the operation, the
// limit. They are the same on every operating system it supports; on
// another, Acquire's error wraps [errors.ErrUnsupported] instead.
var (
	// ErrInvalidName: the app id, key or an option is not acceptable.
	// Nothing was created.
	ErrInvalidName = errors.New("instance: invalid name")
	// ErrLockUnavailable: the instance's files cannot be used. The lock
	// cannot be taken at all (permissions, a file system without locks, an
	// unsafe directory), so whether another instance runs cannot be
	// decided; or a doorbell is not what it should be (a FIFO's path holds
	// another kind of file or another user's, a Windows event is another
	// user's). Distinct from another instance running, which is not an
	// error.
	ErrLockUnavailable = errors.New("instance: lock unavailable")
	// ErrTimeout: a wait ran out (the primary did not answer in time) or
	// the context ended. The error also wraps context.DeadlineExceeded or
	// context.Canceled.
	ErrTimeout = errors.New("instance: timeout")
	// ErrIncompatible: the running primary speaks another protocol version
	// or uses a mechanism this build cannot, or its reply did not decode or
	// arrive whole.
	ErrIncompatible = errors.New("instance: incompatible peer")
	// ErrTooLarge: the message is over the configured maximum (this
	// launch's or the primary's), and was not delivered; or the primary's
	// reply is over this launch's maximum, after the primary handled the
	// message.
	ErrTooLarge = errors.New("instance: message too large")
	// ErrClosed: the instance was released, or Serve was called on a
	// secondary.
	ErrClosed = errors.New("instance: closed")
)
