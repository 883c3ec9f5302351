package instance

import "golang.org/x/sys/unix"

// yieldProcessor lets another thread that is ready to run on this
// processor run first: a spin that waits for another process's thread,
// which the scheduler may have put on this processor, must not keep it.
func yieldProcessor() { unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0) }
