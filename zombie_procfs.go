//go:build linux

package instance

import (
	"bytes"
	"os"
	"strconv"
)

// zombie reports whether pid has exited and waits for its parent to reap
// it, by its state in /proc/<pid>/stat, the field after the command name
// (which may hold any byte, ')' too: hence the last one). Unreadable
// (/proc hidden or not mounted), it is taken for a live process.
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	st := b[i+2]
	return st == 'Z' || st == 'X'
}
