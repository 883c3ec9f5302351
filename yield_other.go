//go:build !linux

package instance

// yieldProcessor does nothing where it was not measured: a sender's spin
// there is a pure spin, as it was before (see yield_linux.go).
func yieldProcessor() {}
