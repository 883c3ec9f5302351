package rundir

import (
	"sync"

	"golang.org/x/sys/unix"
)

// memDir is /dev/shm if it is a tmpfs, as it is on nearly every Linux
// system.
var memDir = sync.OnceValue(func() string {
	var st unix.Statfs_t
	if unix.Statfs(memPath, &st) != nil || st.Type != unix.TMPFS_MAGIC {
		return ""
	}
	return memPath
})

const memPath = "/dev/shm"
