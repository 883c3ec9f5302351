//go:build unix && !aix

package instance

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-instance/instance/handoff"
	"github.com/go-instance/instance/shm"
	"golang.org/x/sys/unix"
)

func prefixFor(t *testing.T, dir string) string {
	t.Helper()
	return filesFor(t, dir).prefix
}

// A symbolic link in place of the lock file (which holds the region) is
// refused, and the file it points to is left alone.
func TestSymlinkRefused(t *testing.T) {
	for _, ext := range []string{".lock"} {
		t.Run(ext, func(t *testing.T) {
			dir := testDir(t)
			target := filepath.Join(dir, "target")
			if err := os.WriteFile(target, []byte("keep"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, prefixFor(t, dir)+ext); err != nil {
				t.Fatal(err)
			}
			_, err := Acquire(testAppID, WithDir(dir))
			if !errors.Is(err, ErrLockUnavailable) || !strings.Contains(err.Error(), "symbolic link") {
				t.Errorf("got %v, want ErrLockUnavailable naming the symbolic link", err)
			}
			if b, _ := os.ReadFile(target); string(b) != "keep" {
				t.Errorf("the link's target was changed: %q", b)
			}
		})
	}
}

// A region file of the wrong size or with garbage contents is
// re-initialised by the next primary, which then serves.
func TestDamagedRegionReinitialised(t *testing.T) {
	for name, content := range map[string][]byte{
		"empty":   {},
		"short":   []byte("garbage"),
		"garbage": []byte(strings.Repeat("\xa5garbage", 300000)),
	} {
		t.Run(name, func(t *testing.T) {
			dir := testDir(t)
			if err := os.WriteFile(prefixFor(t, dir)+".lock", content, 0o600); err != nil {
				t.Fatal(err)
			}
			_, rec := servePrimary(t, dir, defaultBell)
			s := startChild(t, childOpts{dir: dir, bell: defaultBell, args: []string{"after damage"}})
			checkSecondary(t, s, s.next(20*time.Second))
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if len(rec.msgs) != 1 {
				t.Errorf("%d messages, want 1", len(rec.msgs))
			}
		})
	}
}

// Damage done to the region while the primary runs (a header overwritten,
// the file truncated) is repaired when a sender next rings, and that
// sender is served: it rings even a region whose header it cannot read.
// A file cut short the sender gives its size back: unless the primary
// touched it before that, it sees damage only where the header was lost.
func TestRegionDamagedWhileServing(t *testing.T) {
	headerLost := map[string]bool{"header": true, "truncated": true}
	damage := map[string]func(f *os.File) error{
		"header": func(f *os.File) error {
			_, err := f.WriteAt([]byte("\x00\x00\x00\x00\x00\x00\x00\x00\x09"), 0)
			return err
		},
		"truncated": func(f *os.File) error { return f.Truncate(0) },
		"shrunk":    func(f *os.File) error { return f.Truncate(4096) },
	}
	for name, hurt := range damage {
		t.Run(name, func(t *testing.T) {
			forEachBell(t, func(t *testing.T, bell uint32) {
				dir := testDir(t)
				inst, rec := servePrimary(t, dir, bell)
				f, err := os.OpenFile(prefixFor(t, dir)+".lock", os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if err := hurt(f); err != nil {
					t.Fatal(err)
				}
				s := startChild(t, childOpts{dir: dir, bell: bell, args: []string{"after damage"}})
				checkSecondary(t, s, s.next(20*time.Second))
				inst.mu.Lock()
				faults := inst.faults
				inst.mu.Unlock()
				if headerLost[name] && faults == 0 {
					t.Error("the primary saw no damage")
				}
				rec.mu.Lock()
				defer rec.mu.Unlock()
				if len(rec.msgs) != 1 {
					t.Errorf("%d messages, want 1", len(rec.msgs))
				}
			})
		})
	}
}

// A lock file cut short just before an idle Serve waits (after its poll
// found the region whole) does not crash the primary, whose doorbell may
// read the word first: the next launch is answered.
func TestTruncatedBeforeServeWaits(t *testing.T) {
	forEachBell(t, func(t *testing.T, bell uint32) {
		dir := testDir(t)
		path := prefixFor(t, dir) + ".lock"
		var once atomic.Bool
		testHookServeWaits = func(*Instance) {
			if once.CompareAndSwap(false, true) {
				if err := os.Truncate(path, 0); err != nil {
					t.Error(err)
				}
			}
		}
		t.Cleanup(func() { testHookServeWaits = nil }) // after the Serve's end
		_, rec := servePrimary(t, dir, bell)
		s := startChild(t, childOpts{dir: dir, bell: bell, args: []string{"after truncation"}})
		checkSecondary(t, s, s.next(20*time.Second))
		if !once.Load() {
			t.Error("no Serve waited")
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if len(rec.msgs) != 1 {
			t.Errorf("%d messages, want 1", len(rec.msgs))
		}
	})
}

// The per-user directory must be a real directory of this user, closed to
// others: a squatted or loose one is refused with an error that names it.
func TestUnsafeUserDirectory(t *testing.T) {
	tmp := testDir(t)
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("TMPDIR", tmp)
	dir := filepath.Join(tmp, "go-instance-"+strconv.Itoa(os.Geteuid()))

	check := func(t *testing.T, want string) {
		t.Helper()
		_, err := Acquire(testAppID, WithScope(ScopeUser), WithTimeout(time.Second))
		if !errors.Is(err, ErrLockUnavailable) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want ErrLockUnavailable naming %s and %q", err, dir, want)
		}
	}
	t.Run("loose mode", func(t *testing.T) {
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(dir)
		os.Chmod(dir, 0o777)
		check(t, "mode")
	})
	t.Run("symlink", func(t *testing.T) {
		other := t.TempDir()
		if err := os.Symlink(other, dir); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(dir)
		check(t, "symbolic link")
	})
	t.Run("other owner", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to give a directory to another user")
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(dir)
		if err := os.Chown(dir, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		check(t, "owned by uid 65534")
	})
	t.Run("fresh", func(t *testing.T) {
		inst, err := Acquire(testAppID, WithScope(ScopeUser))
		if err != nil {
			t.Fatal(err)
		}
		defer inst.Release()
		var st unix.Stat_t
		if err := unix.Lstat(dir, &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&0o777 != 0o700 || int(st.Uid) != os.Geteuid() {
			t.Errorf("created with mode %#o owner %d", st.Mode&0o777, st.Uid)
		}
	})
}

// A secondary takes the lock file that it finds in the per-user directory
// on trust (this user's, with one link: nobody else can have put it
// there) and does not check the directory, which its primary checked: it
// is answered even once the directory is loose. A launch that is to be the
// primary checks it, and is refused. A lock file open to others is
// tightened by the next launch.
func TestSecondaryTrustsLockFile(t *testing.T) {
	tmp := testDir(t)
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("TMPDIR", tmp)
	dir := filepath.Join(tmp, "go-instance-"+strconv.Itoa(os.Geteuid()))
	lock := filesFor(t, "").lockPath() // the per-user directory's, as guessed before any check
	p := startChild(t, childOpts{})
	if l := p.next(10 * time.Second); l != "PRIMARY" {
		t.Fatalf("first launch: %q, want PRIMARY", l)
	}

	if err := os.Chmod(lock, 0o644); err != nil {
		t.Fatal(err)
	}
	s := startChild(t, childOpts{args: []string{"loose file"}})
	checkSecondary(t, s, s.next(10*time.Second))
	if st, err := os.Stat(lock); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("lock file open to others after a launch: %v, %v; want mode 0600", st.Mode(), err)
	}

	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	s = startChild(t, childOpts{args: []string{"loose directory"}})
	checkSecondary(t, s, s.next(10*time.Second))
	if msgs := p.stop(10 * time.Second); len(msgs) != 2 {
		t.Errorf("primary got %d messages, want 2: %q", len(msgs), msgs)
	}
	_, err := Acquire(testAppID, WithTimeout(time.Second))
	if !errors.Is(err, ErrLockUnavailable) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "mode") {
		t.Errorf("primary in a loose directory: got %v, want ErrLockUnavailable naming %s and its mode", err, dir)
	}
}

// Where $XDG_RUNTIME_DIR has become unsafe, a lock file left in it, which
// a launch finds first, does not keep that launch there once it is to be
// the primary: it becomes the primary in the directory that the checks
// choose, where the next launch finds it.
func TestUntrustedDirectoryLeft(t *testing.T) {
	tmp := testDir(t)
	rt := filepath.Join(tmp, "run")
	if err := os.MkdirAll(filepath.Join(rt, "go-instance"), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_RUNTIME_DIR", rt)
	t.Setenv("TMPDIR", tmp)
	t.Setenv("FLATPAK_ID", "")
	stale := filesFor(t, "").lockPath()
	if filepath.Dir(stale) != filepath.Join(rt, "go-instance") {
		t.Fatalf("lock file guessed at %s, want it in %s", stale, rt)
	}
	if err := os.WriteFile(stale, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(rt, 0o755); err != nil {
		t.Fatal(err)
	}
	p := startChild(t, childOpts{})
	if l := p.next(10 * time.Second); l != "PRIMARY" {
		t.Fatalf("first launch: %q, want PRIMARY", l)
	}
	held := func(path string) bool {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		return unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) == unix.EWOULDBLOCK
	}
	moved := filepath.Join(tmp, "go-instance-"+strconv.Itoa(os.Geteuid()), filepath.Base(stale))
	if held(stale) || !held(moved) {
		t.Errorf("primary holds the lock in the unsafe directory: %v, in the checked one: %v", held(stale), held(moved))
	}
	s := startChild(t, childOpts{args: []string{"next"}})
	checkSecondary(t, s, s.next(10*time.Second))
	if msgs := p.stop(10 * time.Second); len(msgs) != 1 {
		t.Errorf("primary got %d messages, want 1: %q", len(msgs), msgs)
	}
}

// A lock or region file of another user, in a directory the caller
// chose, is refused.
func TestForeignFileRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file to another user")
	}
	dir := testDir(t)
	lock := prefixFor(t, dir) + ".lock"
	if err := os.WriteFile(lock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(lock, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	_, err := Acquire(testAppID, WithDir(dir))
	if !errors.Is(err, ErrLockUnavailable) || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Errorf("got %v, want ErrLockUnavailable naming the owner", err)
	}
}

// A hard link in place of the lock file is refused, in the caller's
// directory and in the shared one of machine scope, and the file it links
// to is left alone.
func TestHardLinkRefused(t *testing.T) {
	dir := testDir(t)
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	lock := prefixFor(t, dir) + ".lock"
	if err := os.Link(target, lock); err != nil {
		t.Fatal(err)
	}
	_, err := Acquire(testAppID, WithDir(dir))
	if !errors.Is(err, ErrLockUnavailable) || !strings.Contains(err.Error(), lock) || !strings.Contains(err.Error(), "2 hard links") {
		t.Errorf("got %v, want ErrLockUnavailable naming %s and its hard links", err, lock)
	}
	shared := &files{perm: 0o666, shared: true}
	fd, err := shared.open(lock, true)
	if err == nil {
		unix.Close(fd)
	}
	if err == nil || !strings.Contains(err.Error(), "hard links") {
		t.Errorf("machine scope: got %v, want an error naming the hard links", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Errorf("the link's target was changed: now %d bytes", len(b))
	}
}

func TestSessionName(t *testing.T) {
	for _, tc := range []struct{ wayland, x11, want string }{
		{"", "", ""},
		{"wayland-0", ":0", "wayland:wayland-0"},
		{"", ":0", "x11::0"},
		{"", ":0.1", "x11::0"},
		{"", "host:10.0", "x11:host:10"},
	} {
		t.Setenv("WAYLAND_DISPLAY", tc.wayland)
		t.Setenv("DISPLAY", tc.x11)
		if got := sessionName(); got != tc.want {
			t.Errorf("WAYLAND_DISPLAY=%q DISPLAY=%q: %q, want %q", tc.wayland, tc.x11, got, tc.want)
		}
	}
}

// $XDG_RUNTIME_DIR is used when it is safe, the Flatpak app's own runtime
// directory inside a sandbox, and the temp dir when $XDG_RUNTIME_DIR is
// unsafe.
func TestUserDirChoice(t *testing.T) {
	tmp := testDir(t)
	rt := filepath.Join(tmp, "run")
	app := filepath.Join(rt, "app", "org.example.App")
	if err := os.MkdirAll(app, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(rt, "app"), 0o700)
	t.Setenv("TMPDIR", tmp)
	t.Setenv("XDG_RUNTIME_DIR", rt)
	t.Setenv("FLATPAK_ID", "")
	for _, tc := range []struct {
		flatpak string
		mode    os.FileMode
		want    string
	}{
		{"", 0o700, filepath.Join(rt, "go-instance")},
		{"org.example.App", 0o700, filepath.Join(app, "go-instance")},
		{"", 0o755, filepath.Join(tmp, "go-instance-"+strconv.Itoa(os.Geteuid()))},
	} {
		os.Chmod(rt, tc.mode)
		t.Setenv("FLATPAK_ID", tc.flatpak)
		got, err := userDir()
		if err != nil || got != tc.want {
			t.Errorf("FLATPAK_ID=%q, runtime dir mode %#o: %q, %v; want %q", tc.flatpak, tc.mode, got, err, tc.want)
		}
	}
	// Without $TMPDIR, the fallback is in memory where Linux has a tmpfs
	// for it.
	want := filepath.Join("/tmp", "go-instance-"+strconv.Itoa(os.Geteuid()))
	var st unix.Statfs_t
	if runtime.GOOS == "linux" && unix.Statfs("/dev/shm", &st) == nil && st.Type == 0x01021994 { // TMPFS_MAGIC
		want = filepath.Join("/dev/shm", "go-instance-"+strconv.Itoa(os.Geteuid()))
	}
	t.Setenv("TMPDIR", "")
	t.Setenv("XDG_RUNTIME_DIR", "")
	if got, err := userDir(); err != nil || got != want {
		t.Errorf("no $TMPDIR, no $XDG_RUNTIME_DIR: %q, %v; want %q", got, err, want)
	}
}

// A primary of another protocol version (here a fake one: this process
// holds the lock and the region says version+1) gets a clear
// ErrIncompatible, once the grace for a damaged header has passed.
func TestIncompatiblePeer(t *testing.T) {
	dir := testDir(t)
	f, err := os.OpenFile(prefixFor(t, dir)+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if ok, err := shm.TryLockFile(f); !ok {
		t.Fatal("lock:", err)
	}
	size := handoff.DefaultLayout.Size()
	if err := f.Truncate(int64(size)); err != nil {
		t.Fatal(err)
	}
	r, err := shm.MapFile(f, 0, size, true)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := handoff.Init(r.Bytes(), handoff.DefaultLayout, handoff.Owner{PID: os.Getpid(), Start: 1}, 1, defaultBell); err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint32(r.Bytes()[8:], handoff.Version+1) // the header's version field
	s := startChild(t, childOpts{dir: dir, bell: defaultBell, args: []string{"x"}})
	if l := s.next(20 * time.Second); !strings.HasPrefix(l, "ERROR other ") || !strings.Contains(l, "incompatible peer") {
		t.Errorf("%q, want ErrIncompatible", l)
	}
}

// A slot's PID field is 32 bits of untrusted input: values that kill(2)
// would read as a process group, or as every process, name no process.
func TestProcessAliveOutOfRange(t *testing.T) {
	if !processAlive(os.Getpid()) {
		t.Error("this process is not alive")
	}
	if strconv.IntSize < 64 {
		t.Skip("such a PID is negative as an int here, and taken as alive")
	}
	for _, pid := range []uint32{1 << 31, 1<<32 - 2, 1<<32 - 1} {
		if processAlive(int(pid)) {
			t.Errorf("processAlive(%d) = true", pid)
		}
	}
}

// A file in the place of the FIFO doorbell, which a primary cannot use, is
// an ErrLockUnavailable naming it, like one in the place of the lock file:
// every error of Acquire wraps a sentinel.
func TestDoorbellFileUnusable(t *testing.T) {
	dir := testDir(t)
	bell := filesFor(t, dir).prefix + ".bell"
	if err := os.WriteFile(bell, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	inst, err := Acquire(testAppID, WithDir(dir), withBell(bellFIFO))
	if err == nil {
		inst.Release()
	}
	if !errors.Is(err, ErrLockUnavailable) || !strings.Contains(err.Error(), bell) {
		t.Errorf("got %v, want ErrLockUnavailable naming %s", err, bell)
	}
}

// checkCtx runs hook from Err, which a waiting sender's check calls just
// before it tries the lock.
type checkCtx struct {
	context.Context
	hook func()
}

func (c checkCtx) Err() error { c.hook(); return nil }

// A primary that answers and exits between a waiting sender's look at its
// slot and the sender's check of the lock: the check takes the lock, the
// answer is then found, and the launch is a secondary, which must not keep
// the lock from the next launch. (One process: the lock is flock's, per
// open file, so the primary's and the sender's descriptors are two
// holders, as in two processes; only the timing needs the one process.)
func TestAnsweredSecondaryLeavesLock(t *testing.T) {
	dir := testDir(t)
	p := acquirePrimary(t, dir, bellFutex)
	got, gate := make(chan struct{}, 1), make(chan struct{})
	go p.Serve(context.Background(), func(m *Message) Reply {
		got <- struct{}{}
		<-gate
		return Reply{Code: 7}
	})
	exited := false
	ctx := checkCtx{context.Background(), func() {
		if exited {
			return
		}
		select {
		case <-got:
		default:
			return
		}
		exited = true
		close(gate)
		waitFor(t, func() bool { p.mu.Lock(); defer p.mu.Unlock(); return p.inflight == 0 })
		// As the kernel does when the primary exits. (Closing the
		// descriptor would not do: the primary's mapping holds the file.)
		if err := p.lock.Unlock(); err != nil {
			t.Error(err)
		}
	}}
	s, err := AcquireContext(ctx, testAppID, WithDir(dir), withBell(bellFutex), WithArgs([]string{"quit"}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	if !exited || s.IsPrimary() || s.Reply().Code != 7 {
		t.Fatalf("primary exited: %v; launch: primary %v, reply %d; want a secondary answered 7", exited, s.IsPrimary(), s.Reply().Code)
	}
	fd, err := unix.Open(prefixFor(t, dir)+".lock", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Errorf("the answered secondary keeps the lock: flock: %v", err)
	}
}
