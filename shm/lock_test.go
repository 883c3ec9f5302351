//go:build unix

package shm_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/go-instance/instance/shm"
)

func init() {
	childRoles["lock-hold"] = childLockHold
	childRoles["lock-try"] = childLockTry
	childRoles["idle"] = childIdle
}

const exitNotLocked = 3

// childLockHold takes the lock on args[0], reports "locked" and holds it
// until its standard input closes (or it is killed).
func childLockHold(args []string) int {
	f, err := os.OpenFile(args[0], os.O_RDWR, 0)
	if err != nil {
		return childFail("%v", err)
	}
	ok, err := shm.TryLockFile(f)
	if err != nil || !ok {
		return childFail("TryLockFile = %v, %v; want true, nil", ok, err)
	}
	ready("locked")
	waitForParent()
	return 0
}

// childLockTry tries the lock on args[0] once: exit 0 if it got it,
// exitNotLocked if another open file holds it.
func childLockTry(args []string) int {
	f, err := os.OpenFile(args[0], os.O_RDWR, 0)
	if err != nil {
		return childFail("%v", err)
	}
	ok, err := shm.TryLockFile(f)
	if err != nil {
		return childFail("TryLockFile: %v", err)
	}
	if !ok {
		return exitNotLocked
	}
	return 0
}

// childIdle reports "ready" and waits until its standard input closes.
func childIdle([]string) int {
	ready("ready")
	waitForParent()
	return 0
}

func newLockFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(tempDir(t), uniqueName(t)+".lock")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func openRW(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func tryLock(t *testing.T, f *os.File, want bool) {
	t.Helper()
	ok, err := shm.TryLockFile(f)
	if err != nil {
		t.Fatalf("TryLockFile: %v", err)
	}
	if ok != want {
		t.Fatalf("TryLockFile = %v, want %v", ok, want)
	}
}

// A lock held by another process excludes us until the kernel drops it when
// that process is killed.
func TestTryLockFileHeldByKilledChild(t *testing.T) {
	path := newLockFile(t)
	c := startChild(t, "lock-hold", path)
	if line := c.readLine(); line != "locked" {
		t.Fatalf("child said %q, want locked", line)
	}
	f := openRW(t, path)
	tryLock(t, f, false)
	tryLock(t, f, false) // a failed attempt takes nothing

	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.wait()
	if ws, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want killed by SIGKILL\nstderr:\n%s", c.cmd.ProcessState, c.stderr)
	}
	// The child has been reaped: its files are closed and the lock is gone.
	tryLock(t, f, true)
	if err := shm.UnlockFile(f); err != nil {
		t.Fatalf("UnlockFile: %v", err)
	}
}

// A lock the parent holds excludes a child until it is unlocked or its file
// closed.
func TestTryLockFileHeldByParent(t *testing.T) {
	path := newLockFile(t)
	try := func(want int) {
		t.Helper()
		if code := startChild(t, "lock-try", path).exitCode(); code != want {
			t.Fatalf("child's TryLockFile: exit code %d, want %d", code, want)
		}
	}
	f := openRW(t, path)
	tryLock(t, f, true)
	try(exitNotLocked)

	if err := shm.UnlockFile(f); err != nil {
		t.Fatalf("UnlockFile: %v", err)
	}
	try(0)

	tryLock(t, f, true)
	try(exitNotLocked)
	f.Close() // the kernel drops the lock with the last reference
	try(0)
}

// A child started while we hold the lock does not inherit it: once we close
// our file, the lock is free although the child still runs.
func TestTryLockFileNotInheritedByChild(t *testing.T) {
	path := newLockFile(t)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	tryLock(t, f, true)
	c := startChild(t, "idle")
	if line := c.readLine(); line != "ready" {
		t.Fatalf("child said %q, want ready", line)
	}
	f.Close()
	tryLock(t, openRW(t, path), true)
	c.stdin.Close()
	c.mustExit0()
}

// flock locks belong to the open file description: two opens in one process
// exclude each other, and the same open may lock again.
func TestTryLockFileTwoOpensInOneProcess(t *testing.T) {
	path := newLockFile(t)
	f1, f2 := openRW(t, path), openRW(t, path)
	tryLock(t, f1, true)
	tryLock(t, f2, false)
	tryLock(t, f1, true) // already ours
	if err := shm.UnlockFile(f1); err != nil {
		t.Fatalf("UnlockFile: %v", err)
	}
	tryLock(t, f2, true)
	tryLock(t, f1, false)
	f2.Close()
	tryLock(t, f1, true)
}

func TestLockClosedFile(t *testing.T) {
	path := newLockFile(t)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if ok, err := shm.TryLockFile(f); err == nil || ok {
		t.Errorf("TryLockFile of a closed file = %v, %v; want false and an error", ok, err)
	}
	if err := shm.UnlockFile(f); err == nil {
		t.Error("UnlockFile of a closed file succeeded")
	}
}
