//go:build !linux

package instance

import "github.com/go-instance/instance/shm"

// heldBell is nil where there is no futex: a sender's doorbell then yields
// its processor before it waits (see yielding).
func heldBell(*uint32) shm.Doorbell { return nil }
