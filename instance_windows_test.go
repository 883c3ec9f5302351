package instance

import (
	"math"
	"testing"
)

// A PID from the region that would let every process take the foreground
// (ASFW_ANY, or a number that is that once cut to 32 bits) is not passed
// to AllowSetForegroundWindow.
func TestForegroundPID(t *testing.T) {
	for _, tc := range []struct {
		pid int64
		ok  bool
	}{{1234, true}, {0, false}, {-1, false}, {0xFFFFFFFF, false}, {0x1FFFFFFFF, false}} {
		if tc.pid > math.MaxInt {
			continue // not an int here: the region's reader has cut it already
		}
		if got := foregroundPID(int(tc.pid)); got != tc.ok {
			t.Errorf("foregroundPID(%#x) = %v, want %v", tc.pid, got, tc.ok)
		}
	}
}

// Launches whose lock files differ (here by %LocalAppData%, which the
// per-user directory follows) name different objects: two primaries, each
// whole, never two on one region.
func TestObjectsFollowLockFile(t *testing.T) {
	c, err := newConfig(testAppID, nil)
	if err != nil {
		t.Fatal(err)
	}
	var objects, locks []string
	for _, dir := range []string{t.TempDir(), t.TempDir()} {
		t.Setenv("LocalAppData", dir)
		f, err := openFiles(c, testAppID)
		if err != nil {
			t.Fatal(err)
		}
		objects, locks = append(objects, f.object), append(locks, f.lockPath)
	}
	if locks[0] == locks[1] || objects[0] == objects[1] {
		t.Errorf("lock files %q, objects %q: want both apart", locks, objects)
	}
}

// The lock, once taken, is reported held when asked again, as flock does:
// a sender's check that took it asks again at its next check.
func TestLockAskedTwice(t *testing.T) {
	lock, err := filesFor(t, testDir(t)).openLock()
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	for i := range 2 {
		if ok, err := lock.TryLock(); !ok || err != nil {
			t.Fatalf("TryLock %d: %v, %v; want true", i+1, ok, err)
		}
	}
	if err := lock.Unlock(); err != nil {
		t.Fatal(err)
	}
}
