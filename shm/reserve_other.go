//go:build unix && !linux

package shm

import "os"

// reserve leaves the file sparse: without Linux's fallocate, a full file
// system shows as a fault when the region's pages are first written.
func reserve(*os.File, int) error { return nil }
