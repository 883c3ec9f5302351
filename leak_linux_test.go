package instance

import (
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// usage counts what this process holds: open descriptors, mappings of
// files in dir, and goroutines.
type usage struct{ fds, maps, goroutines int }

func currentUsage(t *testing.T, dir string) usage {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return usage{len(fds), strings.Count(string(maps), dir), runtime.NumGoroutine()}
}

// grew reports whether anything is held now that was not before (other
// tests' leftovers may close meanwhile: only growth counts).
func grew(before, after usage) bool {
	return after.fds > before.fds || after.maps > before.maps || after.goroutines > before.goroutines
}

// settled waits for exited goroutines to be gone and for the collector's
// cleanups to have run, and returns the usage.
func settled(t *testing.T, dir string, want usage) usage {
	t.Helper()
	var u usage
	for range 100 {
		if u = currentUsage(t, dir); !grew(want, u) {
			break
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	return u
}

// Acquire and Release as the primary, and Acquire as a secondary, give
// back every descriptor, mapping and goroutine they take: a secondary's at
// Release, or once the collector finds it unused.
func TestNoLeaks(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	dir := testDir(t)
	cycle := func() {
		inst, err := Acquire(testAppID, WithDir(dir), WithArgs(nil))
		if err != nil || !inst.IsPrimary() {
			t.Fatal(err)
		}
		if err := inst.Release(); err != nil {
			t.Fatal(err)
		}
	}
	cycle() // the first use starts what stays (the runtime's poller, say)
	before := currentUsage(t, dir)
	for range n {
		cycle()
	}
	if after := settled(t, dir, before); grew(before, after) {
		t.Errorf("after %d Acquire/Release cycles: %+v, before %+v", n, after, before)
	}

	p := startChild(t, childOpts{dir: dir, serve: "quiet", args: []string{"primary"}})
	if l := p.next(20 * time.Second); l != "PRIMARY" {
		t.Fatalf("%q, want PRIMARY", l)
	}
	send := func(release bool) {
		was := currentUsage(t, dir)
		inst, err := Acquire(testAppID, WithDir(dir), WithArgs([]string{"x"}))
		if err != nil || inst.IsPrimary() {
			t.Fatal(err)
		}
		if release {
			if err := inst.Release(); err != nil {
				t.Fatal(err)
			}
			if now := currentUsage(t, dir); now.maps > was.maps || now.fds > was.fds {
				t.Fatalf("after a secondary's Release: %+v, before its Acquire %+v", now, was)
			}
		}
	}
	send(true)
	before = currentUsage(t, dir)
	for _, release := range []bool{true, false} {
		for range n {
			send(release)
		}
		if after := settled(t, dir, before); grew(before, after) {
			t.Errorf("after %d messages forwarded (Release called: %v): %+v, before %+v", n, release, after, before)
		}
	}
}
