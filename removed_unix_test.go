//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package instance

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/go-instance/instance/handoff"
	"golang.org/x/sys/unix"
)

// userPrefix points the per-user directory into a fresh temp directory for
// this test and its children (no $XDG_RUNTIME_DIR: the temp-dir fallback)
// and returns that directory and the default scope's file prefix.
func userPrefix(t *testing.T) (tmp, prefix string) {
	t.Helper()
	tmp = testDir(t)
	t.Setenv("TMPDIR", tmp)
	t.Setenv("XDG_RUNTIME_DIR", "")
	return tmp, filesFor(t, "").prefix
}

// removePublished removes the lock file path and waits until the process
// pid has published itself again (see waitPublished).
func removePublished(t *testing.T, path string, pid int) {
	t.Helper()
	old, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	waitPublished(t, path, old, pid)
}

// waitPublished waits until path is a lock file other than old, whose
// region the process pid has initialised: that primary has published
// itself again, lock first.
func waitPublished(t *testing.T, path string, old os.FileInfo, pid int) {
	t.Helper()
	waitFor(t, func() bool {
		st, err := os.Stat(path)
		if err != nil || os.SameFile(st, old) {
			return false
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		r, err := handoff.Attach(b)
		return err == nil && r.Owner().PID == pid
	})
}

var removedStats struct{ cases, secondPrimaries, healed int }

// Files removed under a running primary: the lock file, every file of the
// instance, or the whole per-user directory. The primary publishes itself
// again, and every later launch is its secondary, never a second primary.
func TestFilesRemoved(t *testing.T) {
	cases := []struct {
		name   string
		user   bool // in the per-user directory, not WithDir
		remove func(dir, prefix string) error
	}{
		{"lock", false, func(_, prefix string) error { return os.Remove(prefix + ".lock") }},
		{"every file", false, func(dir, _ string) error {
			entries, err := os.ReadDir(dir)
			for _, e := range entries {
				err = os.Remove(filepath.Join(dir, e.Name()))
			}
			return err
		}},
		{"directory", true, func(dir, _ string) error {
			os.RemoveAll(dir) // fails if the primary re-published itself in it first, which is as good
			return nil
		}},
		{"directory moved", true, func(dir, _ string) error {
			if err := os.Rename(dir, dir+".old"); err != nil {
				return err
			}
			return os.RemoveAll(dir + ".old")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			forEachBell(t, func(t *testing.T, bell uint32) {
				dir := testDir(t)
				prefix := prefixFor(t, dir)
				if tc.user {
					_, prefix = userPrefix(t)
					dir = filepath.Dir(prefix)
				}
				o := childOpts{bell: bell, serve: "quiet", args: []string{"primary"}}
				if !tc.user {
					o.dir = dir
				}
				p := startChild(t, o)
				if l := p.next(20 * time.Second); l != "PRIMARY" {
					t.Fatalf("%q, want PRIMARY", l)
				}
				o.args = []string{"before"}
				s := startChild(t, o)
				checkSecondary(t, s, s.next(20*time.Second))
				old, err := os.Stat(prefix + ".lock")
				if err != nil {
					t.Fatal(err)
				}
				removedStats.cases++
				if err := tc.remove(dir, prefix); err != nil {
					t.Fatal(err)
				}
				waitPublished(t, prefix+".lock", old, p.cmd.Process.Pid)
				var launches []*child
				for i := range 4 {
					o.args = []string{"after", fmt.Sprint(i)}
					launches = append(launches, startChild(t, o))
				}
				failed := t.Failed()
				for _, s := range launches {
					l := s.next(20 * time.Second)
					if l == "PRIMARY" {
						removedStats.secondPrimaries++
						t.Errorf("child %d became a second primary", s.cmd.Process.Pid)
						continue
					}
					checkSecondary(t, s, l)
				}
				if !t.Failed() && !failed {
					removedStats.healed++
				}
			})
		})
	}
	summary(t, "removed: cases=%d second_primaries=%d healed=%d",
		removedStats.cases, removedStats.secondPrimaries, removedStats.healed)
}

// Once the primary has published itself again, launches still wake its
// idle Serve directly: on the new region's futex word, or through the new
// <name>.serve FIFO, whose removal alone the primary also notices.
func TestIdleServeAfterRemoval(t *testing.T) {
	forEachBell(t, func(t *testing.T, bell uint32) {
		dir := testDir(t)
		prefix := prefixFor(t, dir)
		inst, rounds := idleServe(t, dir, bell)
		old, err := os.Stat(prefix + ".lock")
		if err != nil {
			t.Fatal(err)
		}
		victim := prefix + ".lock"
		if bell == bellFIFO {
			victim = prefix + ".serve"
		}
		if err := os.Remove(victim); err != nil {
			t.Fatal(err)
		}
		waitPublished(t, prefix+".lock", old, os.Getpid())
		waitIdle(t, inst, 1)
		launchesWakeServeAlone(t, inst, rounds, dir, bell)
	})
}

// A message taken from the region before its file was removed is answered
// through that region, once the primary has published a new one.
func TestReplyAfterRemoval(t *testing.T) {
	forEachBell(t, func(t *testing.T, bell uint32) {
		dir := testDir(t)
		inst := acquirePrimary(t, dir, bell)
		got, gate := make(chan string, 8), make(chan struct{})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			inst.Serve(ctx, func(m *Message) Reply {
				got <- m.Args[0]
				if m.Args[0] == "held" {
					<-gate
				}
				return Reply{Code: 3, Data: replyFor(m.Args)}
			})
		}()
		t.Cleanup(func() { cancel(); <-done })
		held := startChild(t, childOpts{dir: dir, bell: bell, args: []string{"held"}})
		if a := <-got; a != "held" {
			t.Fatalf("got %q first", a)
		}
		if err := os.Remove(prefixFor(t, dir) + ".lock"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool {
			inst.mu.Lock()
			defer inst.mu.Unlock()
			return len(inst.retired) == 1
		})
		close(gate)
		checkSecondary(t, held, held.next(20*time.Second))
		after := startChild(t, childOpts{dir: dir, bell: bell, args: []string{"after"}})
		checkSecondary(t, after, after.next(20*time.Second))
	})
}

// lateLaunch opens the primary's lock file, runs between (which removes
// it), and returns a launch (its Acquire, to call) that sends args through
// the file it opened, as a launch that opened the file just before the
// removal would. (It runs in this process, on files of its own; the
// primary cannot tell.)
func lateLaunch(t *testing.T, dir string, bell uint32, between func(), args ...string) func() (*Instance, error) {
	t.Helper()
	cfg, err := newConfig(testAppID, []Option{WithDir(dir), withBell(bell), WithArgs(args)})
	if err != nil {
		t.Fatal(err)
	}
	f, err := openFiles(cfg, testAppID)
	if err != nil {
		t.Fatal(err)
	}
	lock, err := f.openLock()
	if err != nil {
		t.Fatal(err)
	}
	between()
	msg, err := cfg.encodeMessage()
	if err != nil {
		t.Fatal(err)
	}
	return func() (*Instance, error) {
		return acquire(context.Background(), time.Now().Add(10*time.Second), cfg, f, lock, msg)
	}
}

// lateSend sends args as lateLaunch's launch and checks that it is
// answered.
func lateSend(t *testing.T, dir string, bell uint32, between func(), args ...string) {
	t.Helper()
	inst, err := lateLaunch(t, dir, bell, between, args...)()
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Release()
	if inst.IsPrimary() {
		t.Fatal("the late sender became a primary")
	}
	if r := inst.Reply(); r.Code != 3 || string(r.Data) != string(replyFor(args)) {
		t.Errorf("reply %d %q, want 3 %q", r.Code, r.Data, replyFor(args))
	}
}

// A launch that opened the lock file just before it was removed, and sends
// after the primary published a new one, is still served: the old region's
// doorbell is forwarded.
func TestSenderOnRemovedFile(t *testing.T) {
	forEachBell(t, func(t *testing.T, bell uint32) {
		dir := testDir(t)
		path := prefixFor(t, dir) + ".lock"
		p := startChild(t, childOpts{dir: dir, bell: bell, serve: "quiet", args: []string{"primary"}})
		if l := p.next(20 * time.Second); l != "PRIMARY" {
			t.Fatalf("%q, want PRIMARY", l)
		}
		lateSend(t, dir, bell, func() {
			removePublished(t, path, p.cmd.Process.Pid)
		}, "late")
	})
}

// When the primary cannot publish itself again (here a symbolic link
// replaced its lock file), it keeps serving the launches that reach it,
// and releases cleanly.
func TestRemovedNotHealed(t *testing.T) {
	forEachBell(t, func(t *testing.T, bell uint32) {
		dir := testDir(t)
		inst, rec := servePrimary(t, dir, bell)
		lateSend(t, dir, bell, func() {
			link := filepath.Join(dir, "link")
			if err := os.Symlink(filepath.Join(dir, "elsewhere"), link); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(link, prefixFor(t, dir)+".lock"); err != nil {
				t.Fatal(err)
			}
			select {
			case <-inst.guard.done: // the watch gave up
			case <-time.After(20 * time.Second):
				t.Fatal("the watch did not end")
			}
		}, "unhealed")
		rec.mu.Lock()
		n := len(rec.msgs)
		rec.mu.Unlock()
		if n != 1 {
			t.Errorf("%d messages, want 1", n)
		}
		if err := inst.Release(); err != nil {
			t.Errorf("Release: %v", err)
		}
	})
}

// sweep removes what dir holds as systemd-tmpfiles removes aged entries,
// but whatever their age: a subdirectory on which flock(LOCK_EX|LOCK_NB)
// fails is skipped with all it holds.
func sweep(t *testing.T, dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		if !e.IsDir() {
			os.Remove(path)
			continue
		}
		d, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if unix.Flock(int(d.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			sweep(t, path)
			os.Remove(path)
		}
		d.Close()
	}
}

// The temp-dir cleaner leaves a running primary's per-user directory
// alone, and sweeps it once no primary runs there.
func TestTempCleanerSkipsPrimary(t *testing.T) {
	tmp, prefix := userPrefix(t)
	stale := filepath.Join(tmp, "stale")
	if err := os.Mkdir(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stale, "f"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	p := startChild(t, childOpts{bell: bellFIFO, serve: "quiet", args: []string{"primary"}})
	if l := p.next(20 * time.Second); l != "PRIMARY" {
		t.Fatalf("%q, want PRIMARY", l)
	}
	s := startChild(t, childOpts{bell: bellFIFO, args: []string{"before"}}) // makes a slot FIFO too
	checkSecondary(t, s, s.next(20*time.Second))
	files, err := os.ReadDir(filepath.Dir(prefix))
	if err != nil {
		t.Fatal(err)
	}
	old, err := os.Stat(prefix + ".lock")
	if err != nil {
		t.Fatal(err)
	}
	sweep(t, tmp)
	if _, err := os.Stat(stale); err == nil {
		t.Fatal("the sweep left an unlocked directory")
	}
	if after, err := os.ReadDir(filepath.Dir(prefix)); err != nil || !slices.EqualFunc(files, after, func(a, b os.DirEntry) bool { return a.Name() == b.Name() }) {
		t.Errorf("the primary's directory held %v, after the sweep %v (%v)", files, after, err)
	}
	if st, err := os.Stat(prefix + ".lock"); err != nil || !os.SameFile(old, st) {
		t.Errorf("the lock file was replaced or removed: %v", err)
	}
	s = startChild(t, childOpts{bell: bellFIFO, args: []string{"after"}})
	checkSecondary(t, s, s.next(20*time.Second))
	p.stop(20 * time.Second)
	sweep(t, tmp)
	if _, err := os.Stat(filepath.Dir(prefix)); err == nil {
		t.Error("the directory is still locked after the primary exited")
	}
}

// A message queued through a region retired after a removal is still
// answered when the current region is then repaired: the repair resets the
// current region's slots alone, so only its messages are sent again.
func TestRepairKeepsRetiredQueue(t *testing.T) {
	dir := testDir(t)
	path := filesFor(t, dir).lockPath()
	p, launch := retiredLaunch(t, dir)
	sent := make(chan error, 1)
	go func() {
		inst, err := launch()
		if err == nil {
			inst.Release()
		}
		sent <- err
	}()
	waitFor(t, func() bool { p.mu.Lock(); defer p.mu.Unlock(); return len(p.queue) == 1 })
	b, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.WriteAt([]byte("damage"), 0)
	b.Close()
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.pollLocked() // finds the damage and repairs the current region
	faults := p.faults
	p.mu.Unlock()
	if faults == 0 {
		t.Fatal("the primary did not repair the damaged region")
	}
	got := make(chan []string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Serve(ctx, func(m *Message) Reply { got <- m.Args; return Reply{} })
	if err := <-sent; err != nil {
		t.Errorf("sender through the retired region: %v; want its answer", err)
	}
	select {
	case args := <-got:
		if !slices.Equal(args, []string{"late"}) {
			t.Errorf("handler got %q, want [late]", args)
		}
	default:
		t.Error("the handler never got the message queued through the retired region")
	}
}

// A launch that opened the lock file just before it was removed, and whose
// message is lost when the primary then leaves, does not become the primary
// of the removed file (which it can lock, but nobody could find): it takes
// the file at the path, and the next launch is its secondary.
func TestRemovedLockNotTaken(t *testing.T) {
	dir := testDir(t)
	path := filesFor(t, dir).lockPath()
	p, launch := retiredLaunch(t, dir)
	type outcome struct {
		inst *Instance
		err  error
	}
	done := make(chan outcome, 1)
	go func() {
		inst, err := launch()
		done <- outcome{inst, err}
	}()
	waitFor(t, func() bool { p.mu.Lock(); defer p.mu.Unlock(); return len(p.queue) == 1 })
	p.Release() // the queued message is lost: the launch tries again
	s := <-done
	if s.err != nil {
		t.Fatal(s.err)
	}
	defer s.inst.Release()
	if !s.inst.IsPrimary() {
		t.Fatalf("the launch got a reply (%+v) from a primary that had left", s.inst.Reply())
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.inst.Serve(ctx, func(*Message) Reply { return Reply{Code: 5} })
	next, err := Acquire(testAppID, WithDir(dir), withBell(bellFutex), WithTimeout(5*time.Second))
	if err != nil {
		t.Fatalf("next launch: %v", err)
	}
	defer next.Release()
	if next.IsPrimary() {
		t.Errorf("two primaries: the launch holds the removed file's lock, the next launch %s", path)
	} else if next.Reply().Code != 5 {
		t.Errorf("next launch answered %d, want 5", next.Reply().Code)
	}
}

// A FIFO removed, and the primary's heal fails (here at the last step,
// by a hook): the lock file, which the primary never unlinks, stays at its
// path, locked; the other FIFO is its own still; nothing made for the heal
// is left; and the next launch is not a second primary.
func TestFailedHealKeepsLock(t *testing.T) {
	dir := testDir(t)
	prefix := prefixFor(t, dir)
	testHookPublish = func() error { return errors.New("hook: fail the heal") }
	t.Cleanup(func() { testHookPublish = nil })
	inst := acquirePrimary(t, dir, bellFIFO)
	var before []os.FileInfo
	for _, ext := range []string{".lock", ".serve"} {
		st, err := os.Stat(prefix + ext)
		if err != nil {
			t.Fatal(err)
		}
		before = append(before, st)
	}
	if err := os.Remove(prefix + ".bell"); err != nil {
		t.Fatal(err)
	}
	<-inst.guard.done // the watch ends once the heal has failed
	for i, ext := range []string{".lock", ".serve"} {
		if at, err := os.Stat(prefix + ext); err != nil || !os.SameFile(before[i], at) {
			t.Errorf("after the failed heal, %s is %v (%v), not the primary's", ext, at, err)
		}
	}
	if left, _ := filepath.Glob(prefix + ".*-*"); len(left) != 0 {
		t.Errorf("the failed heal left %q", left)
	}
	c := startChild(t, childOpts{dir: dir, bell: bellFIFO, args: []string{"next"}, timeout: time.Second})
	if l := c.next(20 * time.Second); l == "PRIMARY" {
		t.Errorf("a launch after the failed heal is a second primary")
	} else {
		t.Logf("launch: %s", l)
	}
}

// retiredLaunch starts a primary in dir and returns it and lateLaunch's
// launch, with "late", whose file is removed and the primary published
// anew: the launch sends through the retired region.
func retiredLaunch(t *testing.T, dir string) (*Instance, func() (*Instance, error)) {
	t.Helper()
	path := filesFor(t, dir).lockPath()
	p := acquirePrimary(t, dir, bellFutex)
	return p, lateLaunch(t, dir, bellFutex, func() {
		removePublished(t, path, os.Getpid())
	}, "late")
}

// A file that nobody holds locked at the lock path when the primary puts
// its new publication in place (one a launch has made and not yet locked,
// or one left by a primary that has gone) does not stop the heal: the
// primary's file replaces it, and the next launch is its secondary.
func TestHealOverUnlockedFile(t *testing.T) {
	dir := testDir(t)
	path := filesFor(t, dir).lockPath()
	made := false
	testHookPublish = func() error {
		made = true
		return os.WriteFile(path, nil, 0o600)
	}
	t.Cleanup(func() { testHookPublish = nil })
	inst := acquirePrimary(t, dir, bellFutex)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go inst.Serve(ctx, func(m *Message) Reply { return Reply{Code: 3, Data: replyFor(m.Args)} })
	removePublished(t, path, os.Getpid())
	if !made {
		t.Fatal("the hook did not run")
	}
	c := startChild(t, childOpts{dir: dir, args: []string{"next"}})
	checkSecondary(t, c, c.next(20*time.Second))
}

// A new primary removes what a primary killed in the middle of publishing
// itself again left beside its lock file, if a minute old and in use by
// nobody; the rest stays. (The lock held here is flock's, per open file
// description, as another process's would be.)
func TestHealLeftoversSwept(t *testing.T) {
	dir := testDir(t)
	prefix := prefixFor(t, dir)
	old := time.Now().Add(-2 * time.Minute)
	file := func(path string, age time.Time) string {
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, age, age); err != nil {
			t.Fatal(err)
		}
		return path
	}
	fifo := func(name string) string {
		path := prefix + name
		if err := unix.Mkfifo(path, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, old, old); err != nil {
			t.Fatal(err)
		}
		return path
	}
	gone := []string{file(prefix+".lock-0123456789abcdef", old), fifo(".bell-0123456789abcdef"), fifo(".serve-0123456789abcdef")}
	kept := []string{
		file(prefix+".lock-fedcba9876543210", time.Now()), // too young
		file(prefix+".lock-0123456789abcdeg", old),        // not a name of ours
		file(prefix+".lock-0123456789abcde", old),
		file(prefix+".lockfile", old),
		fifo(".bell-fedcba9876543210"),             // read by someone
		file(prefix+".lock-1111111111111111", old), // locked
		file(filepath.Join(dir, "go-instance-other-0123456789abcdef.lock-0123456789abcdef"), old),
	}
	reader, err := unix.Open(kept[4], unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(reader)
	locked, err := os.OpenFile(kept[5], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer locked.Close()
	if err := unix.Flock(int(locked.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	inst := acquirePrimary(t, dir, defaultBell)
	deadline := time.Now().Add(20 * time.Second)
	for _, path := range gone {
		for {
			if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s left", filepath.Base(path))
			}
			time.Sleep(time.Millisecond)
		}
	}
	inst.Release() // the sweep has ended with the watch
	for _, path := range kept {
		if _, err := os.Lstat(path); err != nil {
			t.Errorf("%s removed: %v", filepath.Base(path), err)
		}
	}
}
