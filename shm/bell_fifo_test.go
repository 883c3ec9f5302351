//go:build unix

package shm_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/go-instance/instance/shm"
	"golang.org/x/sys/unix"
)

// Tests of the FIFO doorbell alone.

// pendingBytes drains the FIFO at path through a reader of its own and
// returns how many bytes (rings) were waiting in it.
func pendingBytes(t *testing.T, path string) int {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer unix.Close(fd)
	n := 0
	var buf [512]byte
	for {
		m, err := unix.Read(fd, buf[:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN || m == 0:
			return n
		case err != nil:
			t.Fatalf("read %s: %v", path, err)
		}
		n += m
	}
}

func mkfifo(t *testing.T, path string, mode uint32) {
	t.Helper()
	if err := unix.Mkfifo(path, mode); err != nil {
		t.Fatalf("mkfifo %s: %v", path, err)
	}
	if err := os.Chmod(path, fs.FileMode(mode)); err != nil { // past the umask
		t.Fatal(err)
	}
}

func lstatMode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode()
}

func TestFIFOBellRingNoReader(t *testing.T) {
	_, r, fifo := bellSetup(t)
	mkfifo(t, fifo, 0o600)
	b := mustOpenBell(t, "fifo", wordOf(r), fifo, false)
	for range 2 {
		if err := b.Ring(); err != nil {
			t.Fatalf("Ring of a FIFO nobody reads: %v", err)
		}
	}
}

// A ringer that has rung a waiter keeps the FIFO open; once the waiter is
// gone, rings go nowhere without error (and without SIGPIPE killing us), and
// reach the next waiter.
func TestFIFOBellWaiterComesAndGoes(t *testing.T) {
	_, r, fifo := bellSetup(t)
	word := wordOf(r)
	ringer := mustOpenBell(t, "fifo", word, fifo, false)

	w1, err := shm.OpenFIFOBell(word, fifo, 0o600, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := ringer.Ring(); err != nil {
		t.Fatalf("Ring: %v", err)
	}
	if n := pendingBytes(t, fifo); n != 1 {
		t.Fatalf("%d rings in the FIFO, want 1", n)
	}
	if err := w1.Close(); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := ringer.Ring(); err != nil {
			t.Fatalf("Ring %d after the waiter closed: %v", i, err)
		}
	}

	w2 := mustOpenBell(t, "fifo", word, fifo, true)
	if err := ringer.Ring(); err != nil {
		t.Fatalf("Ring: %v", err)
	}
	if n := pendingBytes(t, fifo); n < 1 {
		t.Fatalf("the ring did not reach the second waiter")
	}
	_ = w2
}

// The same with a waiter process killed by SIGKILL.
func TestFIFOBellWaiterKilled(t *testing.T) {
	regionPath, r, fifo := bellSetup(t)
	word := wordOf(r)
	c := startChild(t, "bell-wait", "fifo", regionPath, fifo, "0")
	c.readLine()
	ringer := mustOpenBell(t, "fifo", word, fifo, false)
	if err := ringer.Ring(); err != nil { // the word is unchanged: the child waits on
		t.Fatalf("Ring: %v", err)
	}
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.wait()
	for i := range 2 {
		if err := ringer.Ring(); err != nil {
			t.Fatalf("Ring %d after the waiter was killed: %v", i, err)
		}
	}
}

// Rings beyond what the FIFO holds are not errors, and one Wait drains them
// all.
func TestFIFOBellFullFIFO(t *testing.T) {
	_, r, fifo := bellSetup(t)
	word := wordOf(r)
	waiter := mustOpenBell(t, "fifo", word, fifo, true)
	ringer := mustOpenBell(t, "fifo", word, fifo, false)
	const rings = 1 << 17 // more than any pipe buffer
	for i := range rings {
		b := ringer
		if i%2 == 1 {
			b = waiter // a waiter's Ring writes into its own descriptor
		}
		if err := b.Ring(); err != nil {
			t.Fatalf("Ring %d: %v", i, err)
		}
	}
	mustReturn(t, "Wait on a full FIFO", func() error { return waiter.Wait(0, -1) })
	if n := pendingBytes(t, fifo); n != 0 {
		t.Errorf("%d rings left in the FIFO after a Wait, want none", n)
	}
}

func TestFIFOBellCreatesFIFOWithPerm(t *testing.T) {
	dir := tempDir(t)
	var word uint32
	for _, perm := range []fs.FileMode{0o600, 0o666} {
		path := filepath.Join(dir, fmt.Sprintf("%s-%o.bell", uniqueName(t), perm))
		b, err := shm.OpenFIFOBell(&word, path, perm, true)
		if err != nil {
			t.Fatalf("OpenFIFOBell(%#o): %v", perm, err)
		}
		b.Close()
		mode := lstatMode(t, path)
		if mode.Type() != fs.ModeNamedPipe || mode.Perm() != perm {
			t.Errorf("OpenFIFOBell(%#o) made %v, want a FIFO with mode %v", perm, mode, perm)
		}
	}
	// A FIFO of ours with other permissions is opened to others for a
	// shared perm.
	path := filepath.Join(dir, uniqueName(t)+".bell")
	mkfifo(t, path, 0o600)
	b, err := shm.OpenFIFOBell(&word, path, 0o666, true)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if mode := lstatMode(t, path); mode.Perm() != 0o666 {
		t.Errorf("existing FIFO has mode %v after OpenFIFOBell(0666), want 0666", mode)
	}
}

// checkRefused checks that neither a waiter nor a ringer accepts path, and
// that whatever is at path is left as it was.
func checkRefused(t *testing.T, path, why string) {
	t.Helper()
	before, _ := os.Lstat(path)
	var word uint32
	if b, err := shm.OpenFIFOBell(&word, path, 0o600, true); err == nil {
		b.Close()
		t.Errorf("waiter accepted %s", why)
	} else if !strings.Contains(err.Error(), path) {
		t.Errorf("waiter's error %q does not name %s", err, path)
	}
	if before != nil && before.Mode().Type() == fs.ModeNamedPipe {
		// A reader, so that the ringer does not take the FIFO for one
		// nobody waits on.
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
	}
	b, err := shm.OpenFIFOBell(&word, path, 0o600, false)
	if err != nil {
		t.Fatalf("ringer: %v", err) // a ringer opens nothing until it rings
	}
	if err := b.Ring(); err == nil {
		t.Errorf("ringer rang %s", why)
	} else if !strings.Contains(err.Error(), path) {
		t.Errorf("ringer's error %q does not name %s", err, path)
	}
	if err := b.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if before != nil && before.Mode().Type() == fs.ModeNamedPipe {
		if n := pendingBytes(t, path); n != 0 {
			t.Errorf("%d rings reached %s", n, why)
		}
	}
	after, _ := os.Lstat(path)
	if (before == nil) != (after == nil) || before != nil && (before.Mode() != after.Mode() || before.Size() != after.Size()) {
		t.Errorf("%s changed: %v, then %v", why, before, after)
	}
}

func TestFIFOBellRefusesRegularFile(t *testing.T) {
	_, _, fifo := bellSetup(t)
	if err := os.WriteFile(fifo, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	checkRefused(t, fifo, "a regular file")
	if data, _ := os.ReadFile(fifo); string(data) != "data" {
		t.Errorf("the file now holds %q", data)
	}
}

func TestFIFOBellRefusesDirectory(t *testing.T) {
	_, _, fifo := bellSetup(t)
	if err := os.Mkdir(fifo, 0o700); err != nil {
		t.Fatal(err)
	}
	checkRefused(t, fifo, "a directory")
}

func TestFIFOBellRefusesSymlink(t *testing.T) {
	_, r, fifo := bellSetup(t)
	// A link to a live FIFO: a ring must not go through it.
	target := fifo + ".target"
	waiter := mustOpenBell(t, "fifo", wordOf(r), target, true)
	if err := os.Symlink(target, fifo); err != nil {
		t.Fatal(err)
	}
	checkRefused(t, fifo, "a symbolic link to a FIFO")
	if n := pendingBytes(t, target); n != 0 {
		t.Errorf("%d rings reached the FIFO through the link", n)
	}
	_ = waiter

	// A dangling link: the waiter must not create its target.
	dangling := fifo + ".dangling"
	missing := fifo + ".missing"
	if err := os.Symlink(missing, dangling); err != nil {
		t.Fatal(err)
	}
	checkRefused(t, dangling, "a dangling symbolic link")
	if _, err := os.Lstat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the link's target was created (Lstat: %v)", err)
	}
}

// A FIFO of another user is refused for a private perm (0600), accepted for
// a shared one (0666) and left as it is.
func TestFIFOBellRefusesOtherOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a FIFO to another user")
	}
	const nobody = 65534
	_, r, fifo := bellSetup(t)
	mkfifo(t, fifo, 0o600)
	if err := os.Chown(fifo, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	checkRefused(t, fifo, "a FIFO of another user")
	if err := os.Chmod(fifo, 0o666); err != nil {
		t.Fatal(err)
	}
	checkRefused(t, fifo, "a FIFO of another user, open to all")

	word := wordOf(r)
	waiter, err := shm.OpenFIFOBell(word, fifo, 0o666, true)
	if err != nil {
		t.Fatalf("waiter refused a shared FIFO of another user: %v", err)
	}
	defer waiter.Close()
	ringer, err := shm.OpenFIFOBell(word, fifo, 0o666, false)
	if err != nil {
		t.Fatal(err)
	}
	defer ringer.Close()
	if err := ringer.Ring(); err != nil {
		t.Fatalf("ringer refused a shared FIFO of another user: %v", err)
	}
	if n := pendingBytes(t, fifo); n != 1 {
		t.Errorf("%d rings in the FIFO, want 1", n)
	}
	st, err := os.Lstat(fifo)
	if err != nil {
		t.Fatal(err)
	}
	if uid := st.Sys().(*syscall.Stat_t).Uid; uid != nobody || st.Mode().Perm() != 0o666 {
		t.Errorf("the FIFO is now uid %d mode %v, want uid %d mode 0666", uid, st.Mode(), nobody)
	}
}

func TestFIFOBellCloseTwice(t *testing.T) {
	_, r, fifo := bellSetup(t)
	word := wordOf(r)
	waiter, err := shm.OpenFIFOBell(word, fifo, 0o600, true)
	if err != nil {
		t.Fatal(err)
	}
	ringer, err := shm.OpenFIFOBell(word, fifo, 0o600, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := ringer.Ring(); err != nil { // now it holds a write end
		t.Fatal(err)
	}
	for _, b := range []shm.Doorbell{ringer, waiter} {
		for i := range 2 {
			if err := b.Close(); err != nil {
				t.Errorf("Close %d: %v", i, err)
			}
		}
	}
}

// A ringer keeps its write end of the FIFO open. When the FIFO is replaced
// (removed and made again, as a new waiter does when the path is gone),
// the ring must still reach the waiter on the new FIFO, not vanish into
// the old, unlinked one.
func TestFIFOBellRingAfterFIFOReplaced(t *testing.T) {
	_, r, fifo := bellSetup(t)
	word := wordOf(r)
	ringer := mustOpenBell(t, "fifo", word, fifo, false)

	w1, err := shm.OpenFIFOBell(word, fifo, 0o600, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := ringer.Ring(); err != nil { // the ringer now holds the FIFO open
		t.Fatal(err)
	}
	w1.Close()
	if err := os.Remove(fifo); err != nil {
		t.Fatal(err)
	}

	w2 := mustOpenBell(t, "fifo", word, fifo, true) // makes a new FIFO
	_ = w2
	atomic.AddUint32(word, 1)
	if err := ringer.Ring(); err != nil {
		t.Fatalf("Ring: %v", err)
	}
	if n := pendingBytes(t, fifo); n != 1 {
		t.Errorf("Ring returned nil but %d rings reached the waiter on the new FIFO, want 1", n)
	}
}
