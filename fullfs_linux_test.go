package instance

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A primary whose region's file system is full (a tmpfs) reports
// ErrLockUnavailable rather than die of the fault of its first write.
func TestRegionOnFullFileSystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to mount a small tmpfs")
	}
	dir := testDir(t)
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=256k,mode=0700"); err != nil {
		if errors.Is(err, unix.EPERM) {
			t.Skipf("mount: %v (a container without CAP_SYS_ADMIN)", err)
		}
		t.Fatal(err)
	}
	defer unix.Unmount(dir, 0)
	fill, err := os.Create(filepath.Join(dir, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = fill.Write(make([]byte, 4096))
	}
	fill.Close()
	inst, err := Acquire(testAppID, WithDir(dir), WithTimeout(time.Second))
	if err == nil {
		inst.Release()
	}
	if !errors.Is(err, ErrLockUnavailable) {
		t.Errorf("Acquire on a full tmpfs: %v, want ErrLockUnavailable", err)
	}
}
