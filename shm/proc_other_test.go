//go:build unix && !linux

package shm_test

import "testing"

// waitUntilBlocked cannot tell without Linux's /proc: the test rings
// without knowing whether the waiter sleeps yet.
func waitUntilBlocked(t *testing.T, pid int, kind string, addr uint64) bool { return false }
