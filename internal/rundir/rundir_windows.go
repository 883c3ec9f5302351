//go:build windows

// Package rundir finds the per-user directory where package instance keeps
// its lock files and package shm its file-backed objects.
package rundir

import (
	"os"
	"path/filepath"
)

// User returns %LocalAppData%\go-instance, created if missing. The
// directory inherits the user profile's DACL, closed to other users.
func User() (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(base, "go-instance")
	return dir, os.MkdirAll(dir, 0o700)
}
