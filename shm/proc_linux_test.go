//go:build linux

package shm_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// waitUntilBlocked waits until a thread of process pid sleeps in the system
// call a doorbell's Wait makes: futex(2) on the word at addr, or ppoll(2) on
// one descriptor (the Go runtime itself makes no ppoll calls). Ringing only
// after that makes sure the ring, not a change of the word seen before
// sleeping, is what wakes the waiter. It reports false, and the test goes on
// without that assurance, if /proc cannot tell.
func waitUntilBlocked(t *testing.T, pid int, kind string, addr uint64) bool {
	t.Helper()
	deadline := hangDeadline(t)
	for {
		found, ok := blockedIn(pid, kind, addr)
		if !ok {
			t.Logf("cannot read /proc/%d/task/*/syscall; ringing without knowing that the waiter sleeps", pid)
			return false
		}
		if found {
			return true
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d never slept in %s", pid, kind)
		}
		time.Sleep(time.Millisecond)
	}
}

func blockedIn(pid int, kind string, addr uint64) (found, ok bool) {
	tasks, err := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/syscall")
	if err != nil || len(tasks) == 0 {
		return false, false
	}
	read := false
	for _, name := range tasks {
		b, err := os.ReadFile(name)
		if err != nil {
			continue // the thread may have gone
		}
		read = true
		f := strings.Fields(string(b))
		if len(f) < 3 {
			continue // "running", or not in a system call
		}
		nr, err1 := strconv.ParseInt(f[0], 10, 64)
		a1, err2 := strconv.ParseUint(f[1], 0, 64)
		a2, err3 := strconv.ParseUint(f[2], 0, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		switch kind {
		case "futex":
			// futex(addr, FUTEX_WAIT, ...)
			if nr == unix.SYS_FUTEX && a1 == addr && a2&0x7f == 0 /* FUTEX_WAIT, whatever the flags */ {
				return true, true
			}
		case "futex-set":
			// futex(addr, FUTEX_WAIT_BITSET, ...)
			if nr == unix.SYS_FUTEX && a1 == addr && a2&0x7f == 9 {
				return true, true
			}
		case "poll":
			// ppoll(fds, 1, ...)
			if nr == unix.SYS_PPOLL && a2 == 1 {
				return true, true
			}
		default:
			panic("unknown kind " + kind)
		}
	}
	return false, read
}
