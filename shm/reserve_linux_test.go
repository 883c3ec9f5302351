package shm_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-instance/instance/shm"
	"golang.org/x/sys/unix"
)

// Create of a region larger than the tmpfs that holds it fails, leaving
// nothing at the name, rather than return a region whose first write
// would fault.
func TestCreateLargerThanFileSystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to mount a small tmpfs")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m,mode=0700"); err != nil {
		if errors.Is(err, unix.EPERM) {
			t.Skipf("mount: %v (a container without CAP_SYS_ADMIN)", err)
		}
		t.Fatal(err)
	}
	defer unix.Unmount(dir, 0)
	t.Setenv("XDG_RUNTIME_DIR", dir)
	t.Setenv("FLATPAK_ID", "")
	name := uniqueName(t)
	r, err := shm.Create(name, 4<<20)
	if err == nil {
		r.Close()
		shm.Remove(name)
		t.Fatal("Create of 4 MiB on a tmpfs of 1 MiB succeeded")
	}
	if !errors.Is(err, unix.ENOSPC) {
		t.Errorf("Create: %v, want ENOSPC", err)
	}
	if _, err := shm.Open(name); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open after the failed Create: %v, want fs.ErrNotExist", err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "go-instance", "*"))
	if len(left) != 0 {
		t.Errorf("files left: %q", left)
	}
	if r, err := shm.Create(name, 64<<10); err != nil {
		t.Errorf("Create of 64 KiB there: %v", err)
	} else {
		r.Close()
		shm.Remove(name)
	}
}
