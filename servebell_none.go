//go:build unix && !linux

package instance

import "github.com/go-instance/instance/shm"

// serveBell returns the doorbell of idle Serve calls for the futex
// doorbell's word: its Serve set (a futex primary runs on Linux only).
func serveBell(word *uint32, _ int, _ bool) (shm.Doorbell, error) {
	return shm.NewFutexBellSet(word, bellServe)
}
