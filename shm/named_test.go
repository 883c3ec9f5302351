package shm_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/go-instance/instance/shm"
)

// regionName is a name of this test alone; its region and mutex files are
// removed at its end.
func regionName(t *testing.T) string {
	name := uniqueName(t)
	t.Cleanup(func() {
		shm.Remove(name)
		shm.RemoveMutexFile(name)
	})
	return name
}

func TestCreateOpen(t *testing.T) {
	name := regionName(t)
	if _, err := shm.Open(name); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open of a missing region: %v, want fs.ErrNotExist", err)
	}
	r, err := shm.Create(name, 10000)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Size() != 10000 {
		t.Errorf("Size %d, want 10000", r.Size())
	}
	if _, err := shm.Create(name, 10000); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second Create: %v, want fs.ErrExist", err)
	}
	copy(r.Bytes(), "shared")
	o, err := shm.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if string(o.Bytes()[:6]) != "shared" || o.Size() < 10000 {
		t.Errorf("Open sees %q in %d bytes", o.Bytes()[:6], o.Size())
	}
	c, err := shm.CreateOrOpen(name, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Size() < 10000 || string(c.Bytes()[:6]) != "shared" {
		t.Error("CreateOrOpen did not open the existing region")
	}
}

func TestCreateOrOpenCreates(t *testing.T) {
	name := regionName(t)
	r, err := shm.CreateOrOpen(name, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Size() != 4096 {
		t.Errorf("Size %d, want 4096", r.Size())
	}
}

func TestNamedInvalid(t *testing.T) {
	for _, name := range []string{"", ".x", "-x", "a/b", `a\b`, "a b", strings.Repeat("n", 129)} {
		if _, err := shm.Create(name, 10); !errors.Is(err, shm.ErrInvalidName) {
			t.Errorf("Create(%q): %v, want ErrInvalidName", name, err)
		}
		if _, err := shm.OpenMutex(name); !errors.Is(err, shm.ErrInvalidName) {
			t.Errorf("OpenMutex(%q): %v, want ErrInvalidName", name, err)
		}
	}
	if _, err := shm.Create("ok-name", 0); err == nil {
		t.Error("Create with size 0 succeeded")
	}
	// The character is named whole, not its first byte.
	if _, err := shm.Create("caf\u00e9", 10); err == nil || !strings.Contains(err.Error(), `has 'é' at byte 3`) {
		t.Errorf("Create(café): %v, want it to name 'é' at byte 3", err)
	}
}

func TestOpenFileModes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte("hello, mapped file"), 0o600); err != nil {
		t.Fatal(err)
	}
	rw, err := shm.OpenFile(path, shm.ReadWrite)
	if err != nil {
		t.Fatal(err)
	}
	copy(rw.Bytes(), "HELLO")
	if err := rw.Flush(); err != nil {
		t.Fatal(err)
	}
	rw.Close()
	ro, err := shm.OpenFile(path, shm.ReadOnly)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if string(ro.Bytes()) != "HELLO, mapped file" {
		t.Errorf("read back %q", ro.Bytes())
	}
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, nil, 0o600)
	if r, err := shm.OpenFile(empty, shm.ReadOnly); err != nil || r.Size() != 0 {
		t.Errorf("empty file: %v, %v", r, err)
	}
	if _, err := shm.OpenFile(filepath.Join(t.TempDir(), "missing"), shm.ReadOnly); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := shm.OpenFile(t.TempDir(), shm.ReadOnly); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("directory: %v, want it refused as one", err)
	}
}

// Two Mutex values of one name exclude each other as two processes would,
// and one value excludes its own goroutines.
func TestMutexInProcess(t *testing.T) {
	name := regionName(t)
	a, err := shm.OpenMutex(name)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := shm.OpenMutex(name)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := a.Lock(); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.TryLock(); ok || err != nil {
		t.Fatalf("TryLock of a held mutex: %v, %v", ok, err)
	}
	if ok, err := a.TryLock(); ok || err != nil {
		t.Fatalf("TryLock by another goroutine of the holder's value: %v, %v", ok, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := b.LockContext(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("LockContext of a held mutex: %v", err)
	}
	got := make(chan error)
	go func() { got <- b.Lock() }()
	if err := a.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if err := b.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := b.Unlock(); err == nil || !strings.Contains(err.Error(), name) {
		t.Errorf("Unlock of an unlocked mutex: %v, want an error naming its file", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("a second Close: %v, want nothing done", err)
	}
}

// holdMutex takes the named mutex and drops every reference to it, as a
// program that means to hold it until it exits may.
func holdMutex(t *testing.T, name string) {
	m, err := shm.OpenMutex(name)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := m.TryLock(); !ok || err != nil {
		t.Fatalf("TryLock: %v, %v", ok, err)
	}
}

// A held Mutex that nothing refers to stays held: the garbage collector
// does not close its file. (The other holder is another open file, which
// flock and LockFileEx exclude as they exclude another process.)
func TestMutexHeldUnreferenced(t *testing.T) {
	name := regionName(t)
	holdMutex(t, name)
	for range 3 {
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // cleanups run on a goroutine of their own
	}
	other, err := shm.OpenMutex(name)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if ok, err := other.TryLock(); ok || err != nil {
		t.Errorf("TryLock of a mutex held by an unreferenced Mutex: %v, %v; want false, nil", ok, err)
	}
}

// Close of a held Mutex releases it, and its later Lock, TryLock and
// LockContext report os.ErrClosed rather than wait for ever.
func TestMutexClosedWhileHeld(t *testing.T) {
	name := regionName(t)
	m, err := shm.OpenMutex(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Lock(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if ok, err := m.TryLock(); ok || !errors.Is(err, os.ErrClosed) {
		t.Errorf("TryLock after Close: %v, %v; want false and os.ErrClosed", ok, err)
	}
	done := make(chan error, 2)
	go func() { done <- m.Lock() }()
	go func() { done <- m.LockContext(context.Background()) }()
	for range 2 {
		select {
		case err := <-done:
			if !errors.Is(err, os.ErrClosed) {
				t.Errorf("Lock after Close: %v, want os.ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Lock of a Mutex closed while held waits")
		}
	}
	other, err := shm.OpenMutex(name)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if ok, err := other.TryLock(); !ok || err != nil {
		t.Errorf("TryLock after the holder's Close: %v, %v; want true", ok, err)
	}
}

// Flush of an empty region (an empty file's), and of a closed one, has
// nothing to do.
func TestFlushEmptyAndClosed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := shm.OpenFile(path, shm.ReadWrite)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(); err != nil {
		t.Errorf("Flush of an empty region: %v", err)
	}
	if err := os.WriteFile(path, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if r, err = shm.OpenFile(path, shm.ReadWrite); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(); err != nil {
		t.Errorf("Flush after Close: %v", err)
	}
}

// Create of a name taken by a smaller region fails with fs.ErrExist, and
// CreateOrOpen opens that region at its own size, on every system.
func TestCreateOverSmallerRegion(t *testing.T) {
	name := regionName(t)
	r, err := shm.Create(name, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r2, err := shm.Create(name, 1<<20); !errors.Is(err, fs.ErrExist) {
		if err == nil {
			r2.Close()
		}
		t.Errorf("Create over a smaller region: %v, want fs.ErrExist", err)
	}
	r3, err := shm.CreateOrOpen(name, 1<<20)
	if err != nil {
		t.Fatalf("CreateOrOpen over a smaller region: %v", err)
	}
	defer r3.Close()
	if r3.Size() != 4096 {
		t.Errorf("CreateOrOpen gave %d bytes, want the existing region's 4096", r3.Size())
	}
}

// Close while another goroutine waits to take the mutex, which another
// holder has: the wait ends with os.ErrClosed, and the mutex is not left
// taken by the closed value.
func TestMutexClosedWhileTaking(t *testing.T) {
	for _, how := range []string{"Lock", "LockContext"} {
		t.Run(how, func(t *testing.T) {
			name := regionName(t)
			holder, err := shm.OpenMutex(name)
			if err != nil {
				t.Fatal(err)
			}
			defer holder.Close()
			if err := holder.Lock(); err != nil {
				t.Fatal(err)
			}
			m, err := shm.OpenMutex(name)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				if how == "Lock" {
					done <- m.Lock()
				} else {
					done <- m.LockContext(context.Background())
				}
			}()
			time.Sleep(20 * time.Millisecond) // let it wait (the outcome is the same if it has not yet)
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
			if err := holder.Unlock(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if !errors.Is(err, os.ErrClosed) {
					t.Errorf("%s of a Mutex closed meanwhile: %v, want os.ErrClosed", how, err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s of a Mutex closed meanwhile waits", how)
			}
			third, err := shm.OpenMutex(name)
			if err != nil {
				t.Fatal(err)
			}
			defer third.Close()
			if ok, err := third.TryLock(); !ok || err != nil {
				t.Errorf("TryLock after the closed waiter: %v, %v; want true", ok, err)
			}
		})
	}
}
