package instance

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/go-instance/instance/internal/winapi"
	"golang.org/x/sys/windows"
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
		lock, err := f.openLock()
		if err != nil {
			t.Fatal(err)
		}
		defer lock.Close()
		if err := f.ensureSecret(false); err != nil {
			t.Fatal(err)
		}
		objects, locks = append(objects, f.object), append(locks, f.lockPath)
	}
	if locks[0] == locks[1] || objects[0] == objects[1] {
		t.Errorf("lock files %q, objects %q: want both apart", locks, objects)
	}
}

// One directory spelled two ways (here by its short name) holds one lock
// file, so one set of objects: a launch that spells it otherwise reaches
// the primary.
func TestDirSpelledOtherwise(t *testing.T) {
	dir := filepath.Join(testDir(t), "a directory with a long name")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	long, err := windows.UTF16PtrFromString(dir)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]uint16, windows.MAX_PATH)
	n, err := windows.GetShortPathName(long, &buf[0], uint32(len(buf)))
	if n == 0 || int(n) > len(buf) {
		t.Fatalf("GetShortPathName %s: %d, %v", dir, n, err)
	}
	short := windows.UTF16ToString(buf[:n])
	if strings.EqualFold(short, dir) {
		t.Skipf("the volume makes no short names (%s)", short)
	}
	servePrimary(t, dir, bellEvent)
	s := startChild(t, childOpts{dir: short, bell: bellEvent, args: []string{"short"}})
	checkSecondary(t, s, s.next(30*time.Second))
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

// foreignSA makes objects owned by another SID, as another user's would be.
func foreignSA(t *testing.T) *windows.SecurityAttributes { return foreignSDDL(t, "D:P(A;;GA;;;WD)") }

// foreignSDDL makes objects owned by another SID with the DACL given.
func foreignSDDL(t *testing.T, dacl string) *windows.SecurityAttributes {
	t.Helper()
	sd, err := windows.SecurityDescriptorFromString("O:S-1-5-21-1-2-3-4242" + dacl)
	if err != nil {
		t.Fatal(err)
	}
	sa := &windows.SecurityAttributes{SecurityDescriptor: sd}
	sa.Length = uint32(unsafe.Sizeof(*sa))
	return sa
}

// Another user in the session may make objects under any name in Local\.
// Here one makes, before any primary, every name of the instance's that it
// can know without reading the lock file, owned by another SID, as its
// objects would be: the primary and its secondary do without them.
func TestSquattedNamesUnused(t *testing.T) {
	dir := testDir(t)
	f := filesFor(t, dir)
	sa := foreignSA(t)
	names := []string{".bell", ".serve"}
	for i := range 64 {
		names = append(names, fmt.Sprintf(".s%02d", i))
	}
	plant := func(name string, h windows.Handle, err error) {
		t.Helper()
		if h == 0 {
			t.Fatalf("%s: %v", name, err)
		}
		t.Cleanup(func() { windows.CloseHandle(h) })
		if winapi.CheckOwner(h) == nil {
			t.Fatalf("%s: the owner check takes the planted object for the user's", name)
		}
	}
	for _, n := range names {
		name, err := windows.UTF16PtrFromString(f.prefix + n)
		if err != nil {
			t.Fatal(err)
		}
		h, err := windows.CreateEvent(sa, 0, 0, name)
		plant(n, h, err)
	}
	name, err := windows.UTF16PtrFromString(f.prefix + ".shm")
	if err != nil {
		t.Fatal(err)
	}
	h, err := windows.CreateFileMapping(windows.InvalidHandle, sa, windows.PAGE_READWRITE, 0, 1<<20, name)
	plant(".shm", h, err)

	servePrimary(t, dir, bellEvent)
	s := startChild(t, childOpts{dir: dir, bell: bellEvent, args: []string{"squatted"}})
	checkSecondary(t, s, s.next(30*time.Second))
}

func TestExtendedPath(t *testing.T) {
	long := strings.Repeat("d", 250)
	for _, tc := range []struct{ in, want string }{
		{`C:\Users\u\AppData\Local\x.lock`, `C:\Users\u\AppData\Local\x.lock`},
		{`C:\` + long + `\x.lock`, `\\?\C:\` + long + `\x.lock`},
		{`\\server\share\` + long, `\\?\UNC\server\share\` + long},
		{`\\?\C:\` + long, `\\?\C:\` + long},
		{`\\.\pipe\` + long, `\\.\pipe\` + long},
		{`d\` + long, `d\` + long},
	} {
		if got := extendedPath(tc.in); got != tc.want {
			t.Errorf("extendedPath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// A directory whose path is longer than MAX_PATH works as any other (Wine
// allows such paths without the prefix, Windows does not, so here it only
// runs the prefixed path).
func TestLongDir(t *testing.T) {
	dir := testDir(t)
	for len(dir) < 300 {
		dir = filepath.Join(dir, strings.Repeat("d", 50))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	servePrimary(t, dir, bellEvent)
	s := startChild(t, childOpts{dir: dir, bell: bellEvent, args: []string{"long"}})
	checkSecondary(t, s, s.next(30*time.Second))
}

// The names, secret included, can be listed while their objects exist.
// While the primary runs, every one of them exists, its own; once it has
// ended, another user who made one of them first has a new primary take
// new names.
func TestSquattedSecretReplaced(t *testing.T) {
	for _, tc := range []struct{ suffix, dacl string }{
		{".shm", "D:P(A;;GA;;;WD)"},
		{".bell", "D:P(A;;GA;;;WD)"},
		{".s05", "D:P(A;;GA;;;WD)"},
		{".shm", "D:P"}, // nobody let in: the primary's CreateFileMapping is refused
		{".s05", "D:P"},
	} {
		suffix := tc.suffix
		t.Run(suffix+" "+tc.dacl, func(t *testing.T) {
			dir := testDir(t)
			inst := acquirePrimary(t, dir, bellEvent)
			old := inst.files.object
			sa := foreignSA(t)
			for i := range inst.cfg.layout.Slots {
				name, err := windows.UTF16PtrFromString(fmt.Sprintf("%s.s%02d", old, i))
				if err != nil {
					t.Fatal(err)
				}
				h, err := windows.CreateEvent(sa, 0, 0, name)
				if h != 0 {
					windows.CloseHandle(h)
				}
				if err != windows.ERROR_ALREADY_EXISTS {
					t.Fatalf("slot %d: another user's CreateEvent under the primary's name: %v, want ERROR_ALREADY_EXISTS", i, err)
				}
			}
			if err := inst.Release(); err != nil {
				t.Fatal(err)
			}
			name, err := windows.UTF16PtrFromString(old + suffix)
			if err != nil {
				t.Fatal(err)
			}
			sa = foreignSDDL(t, tc.dacl)
			var h windows.Handle
			if suffix == ".shm" {
				h, err = windows.CreateFileMapping(windows.InvalidHandle, sa, windows.PAGE_READWRITE, 0, 1<<20, name)
			} else {
				h, err = windows.CreateEvent(sa, 0, 0, name)
			}
			if h == 0 || err != nil {
				t.Fatalf("planting %s: %v", suffix, err)
			}
			defer windows.CloseHandle(h)

			next, _ := servePrimary(t, dir, bellEvent)
			if next.files.object == old {
				t.Errorf("the new primary kept the names %s", old)
			}
			s := startChild(t, childOpts{dir: dir, bell: bellEvent, args: []string{"after " + suffix}})
			checkSecondary(t, s, s.next(30*time.Second))
		})
	}
}

// In machine scope every user may write the lock file: its objects' names
// have no secret there, which one of them could change under a running
// primary and so keep every launch from it.
func TestMachineScopeNoSecret(t *testing.T) {
	inst := serveMachine(t)
	w, err := os.OpenFile(inst.files.lockPath, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = w.WriteAt(fmt.Appendf(nil, "%016x", time.Now().UnixNano()), secretAt)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	s := startChild(t, childOpts{scope: "machine", key: machineKey, args: []string{"to the machine"}, timeout: 5 * time.Second})
	checkSecondary(t, s, s.next(20*time.Second))
}

// A primary writes its secret into no file that has other names: one of
// the user's, linked under the lock file's name by someone else.
func TestSecretNotWrittenThroughLink(t *testing.T) {
	dir := testDir(t)
	target := filepath.Join(testDir(t), "the user's file")
	if err := os.WriteFile(target, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(target, filesFor(t, dir).lockPath); err != nil {
		t.Fatal(err)
	}
	inst, err := Acquire(testAppID, WithDir(dir), WithArgs(nil))
	if err == nil {
		inst.Release()
		t.Fatal("a primary with a lock file of two links")
	}
	if !errors.Is(err, ErrLockUnavailable) || !strings.Contains(err.Error(), "2 hard links") {
		t.Errorf("error %v, want ErrLockUnavailable naming the links", err)
	}
	if b, err := os.ReadFile(target); err != nil || string(b) != "keep" {
		t.Errorf("the linked file holds %q, %v; want it untouched", b, err)
	}
}

// A directory at the lock file's path is refused, with its path named.
// (Wine opens no directory as a file, and follows a symbolic link made
// here without showing it as one, so confirmLock's check of both is not
// what this shows.)
func TestLockFileADirectory(t *testing.T) {
	dir := testDir(t)
	path := filesFor(t, dir).lockPath
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	inst, err := Acquire(testAppID, WithDir(dir), WithArgs(nil))
	if err == nil {
		inst.Release()
		t.Fatal("a primary with a lock file that is a directory")
	}
	if !errors.Is(err, ErrLockUnavailable) || !strings.Contains(err.Error(), path) {
		t.Errorf("error %v, want ErrLockUnavailable naming %s", err, path)
	}
}
