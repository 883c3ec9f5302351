package instance

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-instance/instance/internal/proctest"
	"github.com/go-instance/instance/shm"
	"golang.org/x/sys/unix"
)

// openLockFile makes a lock file of a page, as a region would be, and
// returns its path and a descriptor of it.
func openLockFile(t *testing.T) (string, int) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "x.lock")
	if err := os.WriteFile(path, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return path, fd
}

// watchLockFile makes a lock file as openLockFile does and the Serve bell
// that watches it, for the word it returns.
func watchLockFile(t *testing.T) (path string, fd int, word *uint32, b shm.Doorbell) {
	t.Helper()
	path, fd = openLockFile(t)
	word = new(uint32)
	b, err := serveBell(word, fd, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return path, fd, word, b
}

// waitAsync runs b.Wait(old, -1) and returns the channel of its result.
func waitAsync(b shm.Doorbell, old uint32) <-chan error {
	done := make(chan error, 1)
	go func() { done <- b.Wait(old, -1) }()
	return done
}

// ringWord moves word and rings the Serve calls as a sender does.
func ringWord(t *testing.T, word *uint32, lockFD int) {
	t.Helper()
	r, err := serveBell(word, lockFD, false)
	if err != nil {
		t.Fatal(err)
	}
	atomic.AddUint32(word, 1)
	r.Ring()
}

// awaitWake fails t unless the Wait that done reports on returns nil,
// after a ring, within 10 s.
func awaitWake(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a ring did not wake the bell in 10 s")
	}
}

// An opening of the lock file wakes a Serve waiting on its watch, which
// watches the word and, with no ring, sleeps again; a ring then wakes it.
func TestOpenerBellOpening(t *testing.T) {
	path, fd, word, b := watchLockFile(t)
	if _, ok := b.(*openerBell); !ok {
		t.Fatalf("serveBell made a %T, not a watch of the lock file", b)
	}
	opened := make(chan struct{}, 1)
	testHookOpened = func() {
		select {
		case opened <- struct{}{}:
		default:
		}
	}
	defer func() { testHookOpened = nil }()
	done := waitAsync(b, 0)
	// Open until one comes while the Wait sleeps (not before it started).
	deadline := time.After(10 * time.Second)
	for watched := false; !watched; {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		select {
		case <-opened:
			watched = true
		case err := <-done:
			t.Fatalf("Wait returned (%v) after an opening, with no ring", err)
		case <-deadline:
			t.Fatal("no opening woke the bell in 10 s")
		case <-time.After(10 * time.Millisecond):
		}
	}
	select {
	case err := <-done:
		t.Fatalf("Wait returned (%v) after an opening, with no ring", err)
	case <-time.After(50 * time.Millisecond):
	}
	ringWord(t, word, fd)
	awaitWake(t, done)
}

// A ring from before a Wait does not end it: its event is stale (the ring
// moved the word first, which Wait compares).
func TestOpenerBellStaleRing(t *testing.T) {
	_, fd, word, b := watchLockFile(t)
	ringWord(t, word, fd)
	const timeout = 200 * time.Millisecond
	start := time.Now()
	if err := b.Wait(atomic.LoadUint32(word), timeout); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < timeout {
		t.Errorf("Wait returned after %v, before its timeout of %v, with nothing new", d, timeout)
	}
}

// Without a watch (here: no such descriptor), idle Serve calls wait in the
// futex's Serve set, which a sender's ring also wakes.
func TestServeBellWithoutWatch(t *testing.T) {
	word := new(uint32)
	b, err := serveBell(word, -1, true)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, ok := b.(*openerBell); ok {
		t.Fatal("serveBell watched a file it cannot have opened")
	}
	done := waitAsync(b, 0)
	time.Sleep(10 * time.Millisecond) // usually asleep by now; if not, the word tells
	ringWord(t, word, -1)
	awaitWake(t, done)
}

// TestOpeningWakesIdleServe: with the futex doorbell, a launch's opening
// of the lock file wakes the primary's idle Serve before the launch rings
// (see openerBell), which then sleeps again: an idle primary's threads
// run after an opening, and not in a second after that.
func TestOpeningWakesIdleServe(t *testing.T) {
	t.Parallel()
	dir := testDir(t)
	p := startChild(t, childOpts{dir: dir, bell: bellFutex, serve: "quiet", args: []string{"primary"}})
	if l := p.next(20 * time.Second); l != "PRIMARY" {
		t.Fatalf("%q, want PRIMARY", l)
	}
	locks, err := filepath.Glob(filepath.Join(dir, "*.lock"))
	if err != nil || len(locks) != 1 {
		t.Fatalf("lock files in %s: %q, %v", dir, locks, err)
	}
	pid := p.cmd.Process.Pid
	proctest.CheckWakes(t, pid, "the idle primary, after an opening of its lock file", func() {
		f, err := os.Open(locks[0])
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	})
	proctest.CheckSleeps(t, pid, "the primary after an opening")
}

// TestOneServeWatches: of several idle Serve calls of a futex primary, one
// at a time waits on the watch of the lock file (a second could read the
// event that is the first's wake-up: see openerBell), and a message and
// the end of each call's context still reach them all.
func TestOneServeWatches(t *testing.T) {
	var mu sync.Mutex
	now, most := 0, 0
	testHookWatchWaits = func(d int) {
		mu.Lock()
		now += d
		most = max(most, now)
		mu.Unlock()
	}
	defer func() { testHookWatchWaits = nil }()
	dir := testDir(t)
	inst := acquirePrimary(t, dir, bellFutex)
	const n = 4
	var served []chan error
	var cancels []context.CancelFunc
	for range n {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ch := make(chan error, 1)
		go func() {
			ch <- inst.Serve(ctx, func(m *Message) Reply { return Reply{Code: 3, Data: replyFor(m.Args)} })
		}()
		served, cancels = append(served, ch), append(cancels, cancel)
	}
	time.Sleep(50 * time.Millisecond) // all asleep by now, usually; a check either way
	c := startChild(t, childOpts{dir: dir, bell: bellFutex, args: []string{"one"}})
	checkSecondary(t, c, c.next(20*time.Second))
	for i := range n {
		cancels[i]()
		wantServeReturn(t, served[i], context.Canceled, "after its context ended")
	}
	mu.Lock()
	defer mu.Unlock()
	if most != 1 {
		t.Errorf("at most %d Serve calls waited on the watch at once, want 1", most)
	}
}
