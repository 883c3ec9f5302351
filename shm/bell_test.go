//go:build unix

package shm_test

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/go-instance/instance/internal/proctest"
	"github.com/go-instance/instance/shm"
)

// Tests common to both doorbells. kind is "futex" or "fifo"; a futex bell
// ignores the FIFO path.

func init() {
	childRoles["bell-wait"] = childBellWait
	childRoles["bell-ring"] = childBellRing
}

const wordOff = 64

func wordOf(r *shm.Region) *uint32 {
	return (*uint32)(unsafe.Pointer(&r.Bytes()[wordOff]))
}

func openBell(kind string, word *uint32, fifo string, wait bool) (shm.Doorbell, error) {
	switch kind {
	case "futex":
		return shm.NewFutexBell(word)
	case "fifo":
		return shm.OpenFIFOBell(word, fifo, 0o600, wait)
	}
	panic("unknown bell kind " + kind)
}

func mustOpenBell(t *testing.T, kind string, word *uint32, fifo string, wait bool) shm.Doorbell {
	t.Helper()
	b, err := openBell(kind, word, fifo, wait)
	if err != nil {
		t.Fatalf("opening %s bell (wait=%v): %v", kind, wait, err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func skipUnlessBell(t *testing.T, kind string) {
	t.Helper()
	if kind == "futex" && runtime.GOOS != "linux" {
		t.Skipf("no futex doorbell on %s", runtime.GOOS)
	}
}

// childBellWait: args kind, region path, FIFO path, old. It maps the region,
// opens the bell as the waiter, reports "ready <address of the word>" and
// waits (without timeout) until the word differs from old; then it reports
// "woke <word>" and exits 0.
func childBellWait(args []string) int {
	kind, region, fifo := args[0], args[1], args[2]
	old, _ := strconv.ParseUint(args[3], 10, 32)
	r, err := mapPath(region, regionSize)
	if err != nil {
		return childFail("MapFile: %v", err)
	}
	defer r.Close()
	word := wordOf(r)
	b, err := openBell(kind, word, fifo, true)
	if err != nil {
		return childFail("opening the bell: %v", err)
	}
	defer b.Close()
	ready("ready %#x", uintptr(unsafe.Pointer(word)))
	for atomic.LoadUint32(word) == uint32(old) {
		if err := b.Wait(uint32(old), -1); err != nil {
			return childFail("Wait: %v", err)
		}
	}
	ready("woke %d", atomic.LoadUint32(word))
	if err := b.Close(); err != nil {
		return childFail("Close: %v", err)
	}
	return 0
}

// childBellRing: args kind, region path, FIFO path, new. It maps the region,
// stores new in the word and rings.
func childBellRing(args []string) int {
	kind, region, fifo := args[0], args[1], args[2]
	v, _ := strconv.ParseUint(args[3], 10, 32)
	r, err := mapPath(region, regionSize)
	if err != nil {
		return childFail("MapFile: %v", err)
	}
	defer r.Close()
	word := wordOf(r)
	b, err := openBell(kind, word, fifo, false)
	if err != nil {
		return childFail("opening the bell: %v", err)
	}
	atomic.StoreUint32(word, uint32(v))
	if err := b.Ring(); err != nil {
		return childFail("Ring: %v", err)
	}
	if err := b.Close(); err != nil {
		return childFail("Close: %v", err)
	}
	return 0
}

// bellSetup makes a region (mapped by the test) and names a FIFO beside it.
func bellSetup(t *testing.T) (regionPath string, r *shm.Region, fifo string) {
	t.Helper()
	regionPath = newRegionFile(t, regionSize)
	r = mustMap(t, regionPath, regionSize)
	fifo = strings.TrimSuffix(regionPath, ".shm") + ".bell"
	return regionPath, r, fifo
}

// mustReturn runs fn and fails the test if it does not return before the
// hang deadline (a hang detector, not a timing assertion).
func mustReturn(t *testing.T, what string, fn func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	timer := time.NewTimer(time.Until(hangDeadline(t)))
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-timer.C:
		t.Fatalf("%s did not return", what)
	}
}

// A child sleeps on the word; the test changes the word and rings; the
// child wakes and exits.
func testBellWakesChild(t *testing.T, kind string) {
	skipUnlessBell(t, kind)
	regionPath, r, fifo := bellSetup(t)
	word := wordOf(r)
	atomic.StoreUint32(word, 7)

	c := startChild(t, "bell-wait", kind, regionPath, fifo, "7")
	var addr uint64
	if _, err := fmt.Sscanf(c.readLine(), "ready %v", &addr); err != nil {
		t.Fatalf("child's ready line: %v", err)
	}
	what := "futex"
	if kind == "fifo" {
		what = "poll"
	}
	waitUntilBlocked(t, c.cmd.Process.Pid, what, addr)

	b := mustOpenBell(t, kind, word, fifo, false)
	atomic.StoreUint32(word, 8)
	if err := b.Ring(); err != nil {
		t.Fatalf("Ring: %v", err)
	}
	if line := c.readLine(); line != "woke 8" {
		t.Fatalf("child said %q, want \"woke 8\"", line)
	}
	c.mustExit0()
	if err := b.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// The test waits on the word; a child changes it and rings.
func testBellChildRings(t *testing.T, kind string) {
	skipUnlessBell(t, kind)
	regionPath, r, fifo := bellSetup(t)
	word := wordOf(r)
	atomic.StoreUint32(word, 1)
	b := mustOpenBell(t, kind, word, fifo, true)

	c := startChild(t, "bell-ring", kind, regionPath, fifo, "2")
	deadline := hangDeadline(t)
	for atomic.LoadUint32(word) == 1 {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("the word never changed\nchild's stderr:\n%s", c.stderr)
		}
		if err := b.Wait(1, left); err != nil {
			t.Fatalf("Wait: %v", err)
		}
	}
	c.mustExit0()
}

// A waiter goroutine and a ringer in one process.
func testBellInProcess(t *testing.T, kind string) {
	skipUnlessBell(t, kind)
	_, r, fifo := bellSetup(t)
	word := wordOf(r)
	waiter := mustOpenBell(t, kind, word, fifo, true)
	ringer := mustOpenBell(t, kind, word, fifo, false)

	done := make(chan error, 1)
	go func() {
		for atomic.LoadUint32(word) == 0 {
			if err := waiter.Wait(0, -1); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	what := "futex"
	if kind == "fifo" {
		what = "poll"
	}
	waitUntilBlocked(t, os.Getpid(), what, uint64(uintptr(unsafe.Pointer(word))))
	atomic.StoreUint32(word, 1)
	if err := ringer.Ring(); err != nil {
		t.Fatalf("Ring: %v", err)
	}
	mustReturn(t, "the waiting goroutine", func() error { return <-done })
}

// Wait with a timeout returns although nobody rings.
func testBellWaitTimeout(t *testing.T, kind string) {
	skipUnlessBell(t, kind)
	_, r, fifo := bellSetup(t)
	word := wordOf(r)
	atomic.StoreUint32(word, 3)
	b := mustOpenBell(t, kind, word, fifo, true)
	for _, d := range []time.Duration{0, time.Nanosecond, 20 * time.Millisecond} {
		mustReturn(t, fmt.Sprintf("Wait(3, %v) with nobody ringing", d), func() error { return b.Wait(3, d) })
	}
}

// Wait returns at once when the word already differs from old, even
// without a timeout.
func testBellWaitWordDiffers(t *testing.T, kind string) {
	skipUnlessBell(t, kind)
	_, r, fifo := bellSetup(t)
	word := wordOf(r)
	atomic.StoreUint32(word, 5)
	for _, wait := range []bool{true, false} {
		b := mustOpenBell(t, kind, word, fifo, wait)
		mustReturn(t, fmt.Sprintf("Wait(4, -1) on word 5 (wait=%v)", wait), func() error { return b.Wait(4, -1) })
	}
}

// Ringing with nobody waiting is fine, and so is closing twice.
func testBellRingAloneAndCloseTwice(t *testing.T, kind string) {
	skipUnlessBell(t, kind)
	_, r, fifo := bellSetup(t)
	word := wordOf(r)
	b, err := openBell(kind, word, fifo, false)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := b.Ring(); err != nil {
			t.Fatalf("Ring with nobody waiting: %v", err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if kind == "fifo" {
		if _, err := os.Lstat(fifo); !os.IsNotExist(err) {
			t.Errorf("a ringer made %s (Lstat: %v)", filepath.Base(fifo), err)
		}
	}
}

func TestFutexBellWakesChild(t *testing.T)      { testBellWakesChild(t, "futex") }
func TestFutexBellChildRings(t *testing.T)      { testBellChildRings(t, "futex") }
func TestFutexBellInProcess(t *testing.T)       { testBellInProcess(t, "futex") }
func TestFutexBellWaitTimeout(t *testing.T)     { testBellWaitTimeout(t, "futex") }
func TestFutexBellWaitWordDiffers(t *testing.T) { testBellWaitWordDiffers(t, "futex") }
func TestFutexBellRingAloneAndCloseTwice(t *testing.T) {
	testBellRingAloneAndCloseTwice(t, "futex")
}

func TestFIFOBellWakesChild(t *testing.T)      { testBellWakesChild(t, "fifo") }
func TestFIFOBellChildRings(t *testing.T)      { testBellChildRings(t, "fifo") }
func TestFIFOBellInProcess(t *testing.T)       { testBellInProcess(t, "fifo") }
func TestFIFOBellWaitTimeout(t *testing.T)     { testBellWaitTimeout(t, "fifo") }
func TestFIFOBellWaitWordDiffers(t *testing.T) { testBellWaitWordDiffers(t, "fifo") }
func TestFIFOBellRingAloneAndCloseTwice(t *testing.T) {
	testBellRingAloneAndCloseTwice(t, "fifo")
}

// An idle waiter (timeout -1) uses no CPU: once asleep, its threads do
// not run for a second.
func testBellIdleSleeps(t *testing.T, kind string) {
	skipUnlessBell(t, kind)
	regionPath, r, fifo := bellSetup(t)
	word := wordOf(r)
	c := startChild(t, "bell-wait", kind, regionPath, fifo, "0")
	c.readLine()
	proctest.CheckSleeps(t, c.cmd.Process.Pid, "the waiter")
	b := mustOpenBell(t, kind, word, fifo, false)
	atomic.StoreUint32(word, 1)
	if err := b.Ring(); err != nil {
		t.Fatalf("Ring: %v", err)
	}
	c.readLine()
	c.mustExit0()
	b.Close()
}

func TestFutexBellIdleSleeps(t *testing.T) { testBellIdleSleeps(t, "futex") }
func TestFIFOBellIdleSleeps(t *testing.T)  { testBellIdleSleeps(t, "fifo") }
