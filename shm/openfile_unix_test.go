//go:build unix

package shm_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-instance/instance/shm"
	"golang.org/x/sys/unix"
)

// A FIFO is refused before it is opened, which would wait for a writer.
func TestOpenFileFIFO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := shm.OpenFile(path, shm.ReadOnly)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "is a FIFO") {
			t.Errorf("FIFO: %v, want it refused as one", err)
		}
	case <-time.After(10 * time.Second):
		if fd, err := unix.Open(path, unix.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
			unix.Close(fd) // the open returns, and the test can end
		}
		t.Fatal("OpenFile of a FIFO still waits after 10s")
	}
}
