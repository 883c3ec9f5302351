package instance

import (
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A launch's ring, a read of the lock file, wakes the idle Serve of a
// bellOpen primary alone when the opening did not (taken out of the watch
// here), before and after the primary publishes itself again.
func TestServeRungByReadingLockFile(t *testing.T) {
	events := openBellEvents
	t.Cleanup(func() { openBellEvents = events }) // after the instances' end
	openBellEvents = unix.IN_ACCESS
	for _, removed := range []bool{false, true} {
		dir := testDir(t)
		inst, rounds := idleServe(t, dir, bellOpen)
		if removed {
			prefix := prefixFor(t, dir)
			old, err := os.Stat(prefix + ".lock")
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(prefix + ".lock"); err != nil {
				t.Fatal(err)
			}
			waitPublished(t, prefix+".lock", old, os.Getpid())
			waitIdle(t, inst, 1)
		}
		launchesWakeServeAlone(t, inst, rounds, dir, bellOpen)
	}
}

// A launch's opening of the lock file wakes the idle Serve before its ring.
func TestServeWakesAtOpening(t *testing.T) {
	var opened atomic.Int64
	testHookOpened = func() { opened.Add(1) }
	t.Cleanup(func() { testHookOpened = nil }) // after the instance's end
	dir := testDir(t)
	inst, _ := idleServe(t, dir, bellOpen)
	for i := range 3 {
		c := startChild(t, childOpts{dir: dir, bell: bellOpen, args: []string{"launch", string(rune('a' + i))}})
		checkSecondary(t, c, c.next(20*time.Second))
		c.cmd.Wait()
		waitIdle(t, inst, 1)
	}
	if opened.Load() == 0 {
		t.Error("no launch's opening of the lock file woke the idle Serve")
	}
}

// A primary that the system refuses an inotify instance names the plain
// futex doorbell, whose Serve calls wait on the futex, and serves launches.
func TestOpenBellUnavailable(t *testing.T) {
	init := inotifyInit
	t.Cleanup(func() { inotifyInit = init }) // after the instance's end
	inotifyInit = func() (int, error) { return -1, unix.EMFILE }
	dir := testDir(t)
	inst, _ := servePrimary(t, dir, bellOpen)
	inst.mu.Lock()
	kind := inst.view.BellKind()
	inst.mu.Unlock()
	if kind != bellFutex {
		t.Fatalf("the region names doorbell %d, want the futex (%d)", kind, bellFutex)
	}
	c := startChild(t, childOpts{dir: dir, bell: bellOpen, args: []string{"x"}})
	checkSecondary(t, c, c.next(20*time.Second))
}
