package instance

import (
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
		if err := f.ensureSecret(); err != nil {
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
		t.Fatalf("short name %s is the long one", short)
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

// Another user in the session may make objects under any name in Local\.
// Here one makes, before any primary, every name of the instance's that it
// can know without reading the lock file, owned by another SID, as its
// objects would be: the primary and its secondary do without them.
func TestSquattedNamesUnused(t *testing.T) {
	dir := testDir(t)
	f := filesFor(t, dir)
	sd, err := windows.SecurityDescriptorFromString("O:S-1-5-21-1-2-3-4242D:P(A;;GA;;;WD)")
	if err != nil {
		t.Fatal(err)
	}
	sa := &windows.SecurityAttributes{SecurityDescriptor: sd}
	sa.Length = uint32(unsafe.Sizeof(*sa))
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
	for _, tc := range []struct{ in, want string }{
		{`C:\Users\u\AppData\Local\x.lock`, `\\?\C:\Users\u\AppData\Local\x.lock`},
		{`\\server\share\d\x.lock`, `\\?\UNC\server\share\d\x.lock`},
		{`\\?\C:\d\x.lock`, `\\?\C:\d\x.lock`},
		{`\\.\pipe\x`, `\\.\pipe\x`},
		{`d\x.lock`, `d\x.lock`},
	} {
		if got := extendedPath(tc.in); got != tc.want {
			t.Errorf("extendedPath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// A directory whose path is longer than MAX_PATH works as any other (Wine
// allows such paths without the prefix; Windows does not).
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
