//go:build unix && !linux

package rundir

// memDir: macOS and the BSDs have no tmpfs that every system mounts for
// all users.
func memDir() string { return "" }

const memPath = ""
