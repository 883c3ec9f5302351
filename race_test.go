//go:build race

package instance

// raceEnabled: the race detector runs atomic operations in C, where a
// memory fault (a region truncated under the primary) kills the process
// instead of becoming the Go panic that catchFault recovers from; and it
// makes every child process slower to start (see count).
const raceEnabled = true
