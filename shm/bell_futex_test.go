//go:build linux

package shm_test

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/go-instance/instance/shm"
)

func init() { childRoles["bell-wait-set"] = childBellWaitSet }

// childBellWaitSet: args region path, set, old. It waits on the word as a
// member of set until the word differs from old, reporting "ready
// <address>" first and "woke <word>" once woken.
func childBellWaitSet(args []string) int {
	set, _ := strconv.ParseUint(args[1], 10, 32)
	old, _ := strconv.ParseUint(args[2], 10, 32)
	r, err := mapPath(args[0], regionSize)
	if err != nil {
		return childFail("MapFile: %v", err)
	}
	defer r.Close()
	word := wordOf(r)
	b, err := shm.NewFutexBellSet(word, uint32(set))
	if err != nil {
		return childFail("NewFutexBellSet: %v", err)
	}
	ready("ready %#x", uintptr(unsafe.Pointer(word)))
	for atomic.LoadUint32(word) == uint32(old) {
		if err := b.Wait(uint32(old), -1); err != nil {
			return childFail("Wait: %v", err)
		}
	}
	ready("woke %d", atomic.LoadUint32(word))
	return 0
}

// A child waits as a member of set 1. A ring of set 2 leaves it asleep,
// though the word changed; a ring of set 1, or a plain futex bell's,
// wakes it.
func TestFutexBellSet(t *testing.T) {
	for _, waker := range []string{"set", "plain"} {
		t.Run(waker, func(t *testing.T) {
			regionPath, r, _ := bellSetup(t)
			word := wordOf(r)
			atomic.StoreUint32(word, 7)
			c := startChild(t, "bell-wait-set", regionPath, "1", "7")
			var addr uint64
			if _, err := fmt.Sscanf(c.readLine(), "ready %v", &addr); err != nil {
				t.Fatalf("child's ready line: %v", err)
			}
			if !waitUntilBlocked(t, c.cmd.Process.Pid, "futex-set", addr) {
				t.Skip("cannot see where the child sleeps")
			}
			other, err := shm.NewFutexBellSet(word, 2)
			if err != nil {
				t.Fatal(err)
			}
			atomic.StoreUint32(word, 8)
			if err := other.Ring(); err != nil {
				t.Fatalf("Ring: %v", err)
			}
			time.Sleep(100 * time.Millisecond) // time to wake, were it woken
			if found, _ := blockedIn(c.cmd.Process.Pid, "futex-set", addr); !found {
				t.Fatal("a ring of set 2 woke a waiter of set 1")
			}
			var b shm.Doorbell
			if waker == "set" {
				b, err = shm.NewFutexBellSet(word, 3)
			} else {
				b, err = shm.NewFutexBell(word)
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Ring(); err != nil {
				t.Fatalf("Ring: %v", err)
			}
			if line := c.readLine(); line != "woke 8" {
				t.Fatalf("child said %q, want \"woke 8\"", line)
			}
			c.mustExit0()
		})
	}
}

// A member of a set waits out its timeout, and an empty set is refused.
func TestFutexBellSetTimeout(t *testing.T) {
	_, r, _ := bellSetup(t)
	word := wordOf(r)
	if _, err := shm.NewFutexBellSet(word, 0); err == nil {
		t.Error("NewFutexBellSet accepted the empty set")
	}
	b, err := shm.NewFutexBellSet(word, 1)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for time.Since(start) < 20*time.Millisecond { // an early return is allowed
		mustReturn(t, "Wait with a timeout", func() error { return b.Wait(atomic.LoadUint32(word), 20*time.Millisecond) })
	}
}

// A wait as a member of a set with a timeout past the clock's range (a
// deadline on the monotonic clock) waits without a limit, as a plain
// futex bell's does, rather than fail.
func TestFutexBellSetHugeTimeout(t *testing.T) {
	word := new(uint32) // a private word: one process is enough here
	b, err := shm.NewFutexBellSet(word, 1)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		atomic.AddUint32(word, 1)
		b.Ring()
	}()
	if err := b.Wait(0, time.Duration(1<<63-1)); err != nil {
		t.Errorf("Wait with the longest timeout: %v", err)
	}
}
