package instance

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// smallTmpfs mounts a tmpfs of 256 KiB on a new directory for the test and
// returns it, and a function that fills it up.
func smallTmpfs(t *testing.T) (dir string, fill func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root, to mount a small tmpfs")
	}
	dir = testDir(t)
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=256k,mode=0700"); err != nil {
		if errors.Is(err, unix.EPERM) {
			t.Skipf("mount: %v (a container without CAP_SYS_ADMIN)", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir, func() {
		f, err := os.Create(filepath.Join(dir, "fill"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for err == nil {
			_, err = f.Write(make([]byte, 4096))
		}
	}
}

// A primary whose region's file system is full (a tmpfs) reports
// ErrLockUnavailable rather than die of the fault of its first write.
func TestRegionOnFullFileSystem(t *testing.T) {
	dir, fill := smallTmpfs(t)
	fill()
	inst, err := Acquire(testAppID, WithDir(dir), WithTimeout(time.Second))
	if err == nil {
		inst.Release()
	}
	if !errors.Is(err, ErrLockUnavailable) {
		t.Errorf("Acquire on a full tmpfs: %v, want ErrLockUnavailable", err)
	}
}

// A primary whose lock file is removed once its file system is full
// cannot publish itself again (its new region's first write faults), and
// goes on serving, rather than die of the fault; it leaves nothing behind.
func TestHealOnFullFileSystem(t *testing.T) {
	dir, fill := smallTmpfs(t)
	inst := acquirePrimary(t, dir, bellFutex)
	fill()
	path := inst.files.lockPath()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	<-inst.guard.done // the watch ends once the heal has failed
	if left, _ := filepath.Glob(path + "-*"); len(left) != 0 {
		t.Errorf("the failed heal left %q", left)
	}
	if !inst.IsPrimary() {
		t.Error("no longer the primary")
	}
}
