//go:build !unix && !windows

package shm_test

import (
	"errors"
	"os"
	"testing"

	"github.com/go-instance/instance/shm"
)

// Where package shm has no implementation, every function says so with
// errors.ErrUnsupported.
func TestUnsupported(t *testing.T) {
	f, err := os.CreateTemp("", "shm")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if err := f.Truncate(4096); err != nil {
		t.Fatal(err)
	}
	if r, err := shm.MapFile(f, 0, 4096, true); !errors.Is(err, errors.ErrUnsupported) {
		if r != nil {
			r.Close()
		}
		t.Errorf("MapFile: %v, want ErrUnsupported", err)
	}
	if _, err := shm.TryLockFile(f); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("TryLockFile: %v, want ErrUnsupported", err)
	}
	if err := shm.UnlockFile(f); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("UnlockFile: %v, want ErrUnsupported", err)
	}
	var word uint32
	if _, err := shm.OpenFIFOBell(&word, f.Name()+".bell", 0o600, true); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("OpenFIFOBell: %v, want ErrUnsupported", err)
	}
}
