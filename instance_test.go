package instance

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// servePrimary makes the test process the primary in dir and records what
// arrives. Secondaries are child processes.
type recorder struct {
	mu   sync.Mutex
	msgs []*Message
	seen chan struct{}
}

// acquirePrimary makes the test process the primary in dir, released at
// the end of the test.
func acquirePrimary(t *testing.T, dir string, bell uint32, opts ...Option) *Instance {
	t.Helper()
	inst, err := Acquire(testAppID, append([]Option{WithDir(dir), withBell(bell), WithArgs(nil), WithMaxMessage(32 << 20)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if !inst.IsPrimary() {
		t.Fatal("the test process is not the primary")
	}
	t.Cleanup(func() { inst.Release() })
	return inst
}

func servePrimary(t *testing.T, dir string, bell uint32, opts ...Option) (*Instance, *recorder) {
	t.Helper()
	inst := acquirePrimary(t, dir, bell, opts...)
	rec := &recorder{seen: make(chan struct{}, 1024)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		inst.Serve(ctx, func(m *Message) Reply {
			rec.mu.Lock()
			rec.msgs = append(rec.msgs, m)
			rec.mu.Unlock()
			rec.seen <- struct{}{}
			return Reply{Code: 3, Data: replyFor(m.Args)}
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		inst.Release()
	})
	return inst, rec
}

// The lock file is never unlinked (DESIGN: unlink after unlock lets two
// primaries run): it is where it was after the primary's Release, and
// after a primary is killed.
func TestLockFileStays(t *testing.T) {
	dir := testDir(t)
	locks := func() []string {
		t.Helper()
		m, err := filepath.Glob(filepath.Join(dir, "*.lock"))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	inst := acquirePrimary(t, dir, defaultBell)
	made := locks()
	if len(made) != 1 {
		t.Fatalf("lock files %q, want one", made)
	}
	before, err := os.Stat(made[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := inst.Release(); err != nil {
		t.Fatal(err)
	}
	p := startChild(t, childOpts{dir: dir, args: []string{"primary"}})
	if l := p.next(20 * time.Second); l != "PRIMARY" {
		t.Fatalf("%q, want PRIMARY", l)
	}
	p.kill()
	if after, err := os.Stat(made[0]); err != nil {
		t.Fatalf("after a Release and a kill: %v", err)
	} else if !os.SameFile(before, after) {
		t.Fatal("after a Release and a kill, another file has the lock file's name: it was removed")
	}
	if now := locks(); len(now) != 1 {
		t.Errorf("lock files %q, want one", now)
	}
}

// The primary is killed while idle: the next launch becomes primary at once,
// with nothing cleaned up by hand.
func TestPrimaryKilledIdle(t *testing.T) {
	forEachBell(t, func(t *testing.T, bell uint32) {
		dir := testDir(t)
		for i := range 3 {
			p := startChild(t, childOpts{dir: dir, bell: bell, args: []string{"p", fmt.Sprint(i)}})
			if l := p.next(20 * time.Second); l != "PRIMARY" {
				t.Fatalf("launch %d: %q, want PRIMARY", i, l)
			}
			s := startChild(t, childOpts{dir: dir, bell: bell, args: []string{"s", fmt.Sprint(i)}})
			checkSecondary(t, s, s.next(20*time.Second))
			p.kill()
		}
	})
}

// The primary is killed while messages are in flight: every secondary ends
// answered, as the new primary, or with a timeout error, never silently,
// and none outlives its timeout.
func TestPrimaryKilledInFlight(t *testing.T) {
	forEachBell(t, func(t *testing.T, bell uint32) {
		dir := testDir(t)
		p := startChild(t, childOpts{dir: dir, bell: bell, serve: "hang", args: []string{"first"}})
		if l := p.next(20 * time.Second); l != "PRIMARY" {
			t.Fatalf("%q, want PRIMARY", l)
		}
		const n = 8
		kids := make([]*child, n)
		for i := range kids {
			kids[i] = startChild(t, childOpts{dir: dir, bell: bell, args: []string{"k", fmt.Sprint(i)}, timeout: 10 * time.Second})
		}
		// Kill once the primary holds a message it will never answer.
		if l := p.next(20 * time.Second); !strings.HasPrefix(l, "MSG ") {
			t.Fatalf("primary: %q, want MSG", l)
		}
		p.kill()
		var primaries, answered, timeouts int
		var newPrimary *child
		for _, c := range kids {
			switch l := c.next(30 * time.Second); {
			case l == "PRIMARY":
				primaries++
				newPrimary = c
			case strings.HasPrefix(l, "SECONDARY "):
				checkSecondary(t, c, l)
				answered++
			case strings.HasPrefix(l, "ERROR timeout "):
				timeouts++
			default:
				t.Errorf("child %d: %q", c.cmd.Process.Pid, l)
			}
		}
		if primaries != 1 {
			t.Errorf("%d new primaries, want 1", primaries)
		}
		// The message the dead primary held, and those it never took, go
		// to the new primary well within the launches' 10 s.
		if timeouts != 0 || answered != n-1 {
			t.Errorf("after the kill: %d answered, %d became primary, %d timed out; want %d answered", answered, primaries, timeouts, n-1)
		}
		if newPrimary != nil {
			newPrimary.stop(20 * time.Second)
		}
	})
}

// A secondary killed in the middle of a large message does not wedge the
// primary, and the messages after it arrive whole. There are more killed
// senders than slots: the later ones get theirs only by taking back a dead
// sender's slot.
func TestSecondaryKilledMidWrite(t *testing.T) {
	forEachBell(t, func(t *testing.T, bell uint32) {
		dir := testDir(t)
		const slots = 2
		_, rec := servePrimary(t, dir, bell, withSlots(slots))
		big := []string{strings.Repeat("x", 4<<20)}
		for i := range slots + 1 {
			s := startChild(t, childOpts{dir: dir, bell: bell, args: big, stall: 10 + 40*i, slots: slots})
			if l := s.next(20 * time.Second); l != "STALLED" {
				t.Fatalf("%q, want STALLED", l)
			}
			s.kill()
		}
		for i := range 3 {
			args := []string{fmt.Sprint(i), strings.Repeat(fmt.Sprint(i), 100<<10)}
			s := startChild(t, childOpts{dir: dir, bell: bell, args: args, slots: slots})
			checkSecondary(t, s, s.next(20*time.Second))
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if len(rec.msgs) != 3 {
			t.Fatalf("%d messages delivered, want the 3 after the killed senders", len(rec.msgs))
		}
		for i, m := range rec.msgs {
			if len(m.Args) != 2 || m.Args[0] != fmt.Sprint(i) || m.Args[1] != strings.Repeat(fmt.Sprint(i), 100<<10) {
				t.Errorf("message %d damaged", i)
			}
		}
	})
}

func TestArguments(t *testing.T) {
	many := make([]string, 10000)
	for i := range many {
		many[i] = fmt.Sprintf("arg-%d", i)
	}
	huge := make([]string, 64)
	for i := range huge {
		huge[i] = strings.Repeat(string(rune('a'+i%26)), 64<<10)
	}
	cases := []struct {
		name string
		args []string
	}{
		{"none", []string{}},
		{"empty strings", []string{"", "", ""}},
		{"unicode", []string{"ünïcödé", "日本語.txt", "emoji-😀", "\u200b"}},
		{"invalid utf8", []string{"\xff", "a\xc0\xafb", "\xed\xa0\x80"}},
		{"10000 args", many},
		{"4 MiB", huge},
	}
	forEachBell(t, func(t *testing.T, bell uint32) {
		dir := testDir(t)
		_, rec := servePrimary(t, dir, bell)
		work := t.TempDir()
		wantDir, err := filepath.EvalSymlinks(work)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				s := startChild(t, childOpts{dir: dir, bell: bell, args: tc.args, workdir: work})
				checkSecondary(t, s, s.next(30*time.Second))
				rec.mu.Lock()
				m := rec.msgs[len(rec.msgs)-1]
				rec.mu.Unlock()
				if !slices.Equal(m.Args, tc.args) {
					t.Errorf("args differ: got %d args, want %d", len(m.Args), len(tc.args))
				}
				if m.Dir != wantDir {
					t.Errorf("dir %q, want %q", m.Dir, wantDir)
				}
				if m.PID != s.cmd.Process.Pid {
					t.Errorf("pid %d, want %d", m.PID, s.cmd.Process.Pid)
				}
			})
		}
	})
}

// Messages that arrive before Serve is called are queued in order.
func TestQueuedBeforeServe(t *testing.T) {
	forEachBell(t, func(t *testing.T, bell uint32) {
		dir := testDir(t)
		inst := acquirePrimary(t, dir, bell)
		var kids []*child
		for i := range 3 {
			kids = append(kids, startChild(t, childOpts{dir: dir, bell: bell, args: []string{fmt.Sprint(i)}}))
			waitFor(t, func() bool {
				inst.mu.Lock()
				defer inst.mu.Unlock()
				return len(inst.queue) == i+1
			})
		}
		var order []string
		ctx, cancel := context.WithCancel(context.Background())
		go inst.Serve(ctx, func(m *Message) Reply {
			order = append(order, m.Args[0])
			if len(order) == 3 {
				cancel()
			}
			return Reply{Code: 3, Data: replyFor(m.Args)}
		})
		for _, c := range kids {
			checkSecondary(t, c, c.next(20*time.Second))
		}
		<-ctx.Done()
		if !slices.Equal(order, []string{"0", "1", "2"}) {
			t.Errorf("handled in order %q", order)
		}
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A primary that never answers: the secondary gets ErrTimeout, not a hang.
func TestTimeoutWithoutReply(t *testing.T) {
	forEachBell(t, func(t *testing.T, bell uint32) {
		dir := testDir(t)
		acquirePrimary(t, dir, bell)
		s := startChild(t, childOpts{dir: dir, bell: bell, args: []string{"x"}, timeout: 500 * time.Millisecond})
		if l := s.next(20 * time.Second); !strings.HasPrefix(l, "ERROR timeout ") {
			t.Errorf("%q, want a timeout error", l)
		}
	})
}

// Release hands over: the next launch becomes primary.
func TestReleaseHandover(t *testing.T) {
	forEachBell(t, func(t *testing.T, bell uint32) {
		dir := testDir(t)
		inst, rec := servePrimary(t, dir, bell)
		s := startChild(t, childOpts{dir: dir, bell: bell, args: []string{"before"}})
		checkSecondary(t, s, s.next(20*time.Second))
		if err := inst.Release(); err != nil {
			t.Fatal(err)
		}
		if err := inst.Release(); err != nil {
			t.Fatal("second Release:", err)
		}
		if err := inst.Serve(context.Background(), nil); !errors.Is(err, ErrClosed) {
			t.Errorf("Serve after Release: %v, want ErrClosed", err)
		}
		p := startChild(t, childOpts{dir: dir, bell: bell, args: []string{"after"}})
		if l := p.next(20 * time.Second); l != "PRIMARY" {
			t.Fatalf("%q, want PRIMARY", l)
		}
		s = startChild(t, childOpts{dir: dir, bell: bell, args: []string{"to new"}})
		checkSecondary(t, s, s.next(20*time.Second))
		if msgs := p.stop(20 * time.Second); len(msgs) != 1 {
			t.Errorf("new primary got %d messages, want 1", len(msgs))
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if len(rec.msgs) != 1 {
			for _, m := range rec.msgs {
				t.Logf("old primary got %q from %d", m.Args, m.PID)
			}
			t.Errorf("old primary got %d messages, want 1", len(rec.msgs))
		}
	})
}

func TestTooLarge(t *testing.T) {
	dir := testDir(t)
	_, rec := servePrimary(t, dir, defaultBell)
	_, err := Acquire(testAppID, WithDir(dir), WithArgs([]string{strings.Repeat("x", 2000)}), WithMaxMessage(1000))
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
	rec.mu.Lock()
	if len(rec.msgs) != 0 {
		t.Error("a message over the limit was delivered")
	}
	rec.mu.Unlock()
	// Streamed up to the limit: many chunks, delivered whole.
	data := bytes.Repeat([]byte{0, 1, 2, 255}, 4<<20)
	s, err := Acquire(testAppID, WithDir(dir), WithData(data), WithArgs([]string{"big"}), WithMaxMessage(32<<20))
	if err != nil || s.IsPrimary() {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.msgs) != 1 || !bytes.Equal(rec.msgs[0].Data, data) {
		t.Error("16 MiB payload not delivered whole")
	}
}

func TestContextCancel(t *testing.T) {
	dir := testDir(t)
	acquirePrimary(t, dir, defaultBell)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := AcquireContext(ctx, testAppID, WithDir(dir))
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want ErrTimeout wrapping context.DeadlineExceeded", err)
	}
}

func TestInvalidInput(t *testing.T) {
	dir := testDir(t)
	for _, id := range []string{"", ".hidden", "-flag", "a/b", "a b", "a\x00b", "ä", strings.Repeat("a", 129), "../etc"} {
		if _, err := Acquire(id, WithDir(dir)); !errors.Is(err, ErrInvalidName) {
			t.Errorf("app id %q: %v, want ErrInvalidName", id, err)
		}
	}
	bad := map[string]Option{
		"key":     WithKey("a/b"),
		"scope":   WithScope(Scope(9)),
		"timeout": WithTimeout(-time.Second),
		"max":     WithMaxMessage(0),
		"env":     WithEnv("A=B"),
		"machine": WithScope(ScopeMachine), // with WithDir
	}
	for name, o := range bad {
		if _, err := Acquire(testAppID, WithDir(dir), o); !errors.Is(err, ErrInvalidName) {
			t.Errorf("%s: %v, want ErrInvalidName", name, err)
		}
	}
	if _, err := Acquire("caf\u00e9", WithDir(dir)); err == nil || !strings.Contains(err.Error(), `has 'é' at byte 3`) {
		t.Errorf("app id café: %v, want it to name 'é' at byte 3", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("invalid input created files: %v", ents)
	}
	if _, err := Acquire(testAppID, WithDir(filepath.Join(dir, "missing"))); !errors.Is(err, ErrLockUnavailable) {
		t.Errorf("missing dir: %v, want ErrLockUnavailable", err)
	}
}

// The activation variables are always forwarded, others on request, and
// unset ones not at all. (Values are text: Windows keeps the environment
// in UTF-16.)
func TestEnvironmentForwarded(t *testing.T) {
	dir := testDir(t)
	p := startChild(t, childOpts{dir: dir, bell: defaultBell, args: []string{"p"}})
	if l := p.next(20 * time.Second); l != "PRIMARY" {
		t.Fatalf("%q, want PRIMARY", l)
	}
	t.Setenv("XDG_ACTIVATION_TOKEN", "")
	os.Unsetenv("XDG_ACTIVATION_TOKEN")
	os.Unsetenv("INSTANCE_TEST_UNSET")
	t.Setenv("DESKTOP_STARTUP_ID", "startup-1")
	t.Setenv("INSTANCE_TEST_EXTRA", "x=ü")
	s, err := Acquire(testAppID, WithDir(dir), WithEnv("INSTANCE_TEST_EXTRA", "INSTANCE_TEST_UNSET"), WithArgs(nil))
	if err != nil || s.IsPrimary() {
		t.Fatal(err)
	}
	var got []string
	for _, l := range p.stop(20 * time.Second) {
		if strings.HasPrefix(l, "ENV ") {
			got = append(got, l)
		}
	}
	want := []string{
		"ENV DESKTOP_STARTUP_ID " + hex.EncodeToString([]byte("startup-1")),
		"ENV INSTANCE_TEST_EXTRA " + hex.EncodeToString([]byte("x=ü")),
	}
	if !slices.Equal(got, want) {
		t.Errorf("forwarded %q, want %q", got, want)
	}
}

// The lock is not inherited: a child process of the primary that outlives
// it does not keep the next launch from becoming primary.
func TestLockNotInherited(t *testing.T) {
	dir := testDir(t)
	p := startChild(t, childOpts{dir: dir, bell: defaultBell, spawn: true})
	if l := p.next(20 * time.Second); l != "PRIMARY" {
		t.Fatalf("%q, want PRIMARY", l)
	}
	var pid int
	if _, err := fmt.Sscanf(p.next(20*time.Second), "SPAWNED %d", &pid); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if sleeper, err := os.FindProcess(pid); err == nil {
			sleeper.Kill()
			sleeper.Wait()
		}
	}()
	p.kill()
	n := startChild(t, childOpts{dir: dir, bell: defaultBell})
	if l := n.next(20 * time.Second); l != "PRIMARY" {
		t.Fatalf("%q, want PRIMARY while the old primary's child still runs", l)
	}
}

// A 1 MiB payload and arguments outside the Basic Multilingual Plane
// arrive exact.
func TestPayload(t *testing.T) {
	forEachBell(t, func(t *testing.T, bell uint32) {
		dir := testDir(t)
		_, rec := servePrimary(t, dir, bell)
		args := []string{"𝄞 clef", "😀", "\U0010FFFF"}
		s := startChild(t, childOpts{dir: dir, bell: bell, args: args, data: 1 << 20})
		checkSecondary(t, s, s.next(20*time.Second))
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if len(rec.msgs) != 1 || !slices.Equal(rec.msgs[0].Args, args) || !bytes.Equal(rec.msgs[0].Data, payload(1<<20)) {
			t.Error("payload or arguments not delivered exact")
		}
	})
}

// Machine scope: one primary for every user, in the shared namespace
// (Windows: Global\ objects; Unix: /tmp).
func TestMachineScope(t *testing.T) {
	serveMachine(t)
	s := startChild(t, childOpts{scope: "machine", key: machineKey, args: []string{"to the machine"}})
	checkSecondary(t, s, s.next(20*time.Second))
}

const machineKey = "machine-scope-test" // fixed: the lock file stays, by design

// serveMachine makes the test process the serving primary of machineKey
// in machine scope, released at the end of the test.
func serveMachine(t *testing.T) *Instance {
	t.Helper()
	inst, err := Acquire(testAppID, WithScope(ScopeMachine), WithKey(machineKey), WithArgs(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Release() })
	if !inst.IsPrimary() {
		t.Fatal("not the primary")
	}
	go inst.Serve(context.Background(), func(m *Message) Reply { return Reply{Code: 3, Data: replyFor(m.Args)} })
	return inst
}

// Serve called from two goroutines handles two messages at once: a slow
// handler does not hold up the other.
func TestServeConcurrently(t *testing.T) {
	dir := testDir(t)
	inst := acquirePrimary(t, dir, defaultBell)
	var running atomic.Int32
	both := make(chan struct{})
	h := func(m *Message) Reply {
		if running.Add(1) == 2 {
			close(both)
		}
		select {
		case <-both:
			return Reply{Code: 3, Data: replyFor(m.Args)}
		case <-time.After(10 * time.Second):
			return Reply{Code: 1} // the other message never reached a handler
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go inst.Serve(ctx, h)
	go inst.Serve(ctx, h)
	a := startChild(t, childOpts{dir: dir, args: []string{"a"}})
	b := startChild(t, childOpts{dir: dir, args: []string{"b"}})
	checkSecondary(t, a, a.next(20*time.Second))
	checkSecondary(t, b, b.next(20*time.Second))
}

// A handler may release the instance (a --quit command): its own sender is
// answered, once, and the next launch becomes the primary.
func TestReleaseFromHandler(t *testing.T) {
	forEachBell(t, func(t *testing.T, bell uint32) {
		dir := testDir(t)
		inst := acquirePrimary(t, dir, bell)
		var calls atomic.Int32
		served := make(chan error, 1)
		go func() {
			served <- inst.Serve(context.Background(), func(m *Message) Reply {
				calls.Add(1)
				if err := inst.Release(); err != nil {
					t.Error(err)
				}
				return Reply{Code: 3, Data: replyFor(m.Args)}
			})
		}()
		q := startChild(t, childOpts{dir: dir, bell: bell, args: []string{"--quit"}})
		checkSecondary(t, q, q.next(20*time.Second))
		if err := <-served; !errors.Is(err, ErrClosed) {
			t.Errorf("Serve: %v, want ErrClosed", err)
		}
		if n := calls.Load(); n != 1 {
			t.Errorf("the handler ran %d times, want once", n)
		}
		p := startChild(t, childOpts{dir: dir, bell: bell, args: []string{"next"}})
		if l := p.next(20 * time.Second); l != "PRIMARY" {
			t.Fatalf("%q, want PRIMARY", l)
		}
		p.stop(20 * time.Second)
	})
}

// wantServeReturn waits for a Serve's result on served and wants it to
// match want.
func wantServeReturn(t *testing.T, served <-chan error, want error, when string) {
	t.Helper()
	select {
	case err := <-served:
		if !errors.Is(err, want) {
			t.Errorf("Serve %s: %v, want %v", when, err, want)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("Serve did not return %s", when)
	}
}

// Serve returns when its context ends, also while it waits on the doorbell
// itself (the futex one, in a set of its own waiters).
func TestServeContextCancel(t *testing.T) {
	forEachBell(t, func(t *testing.T, bell uint32) {
		inst := acquirePrimary(t, testDir(t), bell)
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- inst.Serve(ctx, func(*Message) Reply { return Reply{} }) }()
		time.Sleep(10 * time.Millisecond) // let it go to sleep (it returns either way)
		cancel()
		wantServeReturn(t, served, context.Canceled, "after its context ended")
	})
}

// Of two Serve calls waiting for messages, the first (the one that waits
// on the doorbell, where one at a time does) may end: the other answers the
// next launch.
func TestServeContextCancelOtherWaits(t *testing.T) {
	forEachBell(t, func(t *testing.T, bell uint32) {
		dir := testDir(t)
		inst := acquirePrimary(t, dir, bell)
		first, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- inst.Serve(first, func(*Message) Reply { return Reply{Code: 1} }) }()
		time.Sleep(10 * time.Millisecond) // let it go to sleep first
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		go inst.Serve(ctx, func(m *Message) Reply { return Reply{Code: 3, Data: replyFor(m.Args)} })
		time.Sleep(10 * time.Millisecond)
		cancel()
		wantServeReturn(t, served, context.Canceled, "after its context ended")
		c := startChild(t, childOpts{dir: dir, bell: bell, args: []string{"next"}})
		checkSecondary(t, c, c.next(20*time.Second))
	})
}

// Release ends a Serve that waits for messages at once, while another
// Serve still runs a handler.
func TestReleaseEndsIdleServe(t *testing.T) {
	forEachBell(t, func(t *testing.T, bell uint32) {
		dir := testDir(t)
		inst := acquirePrimary(t, dir, bell)
		handling, finish := make(chan struct{}), make(chan struct{})
		busy := make(chan error, 1)
		go func() {
			busy <- inst.Serve(context.Background(), func(m *Message) Reply {
				close(handling)
				<-finish
				return Reply{Code: 3, Data: replyFor(m.Args)}
			})
		}()
		c := startChild(t, childOpts{dir: dir, bell: bell, args: []string{"a"}})
		<-handling
		idle := make(chan error, 1)
		go func() { idle <- inst.Serve(context.Background(), func(*Message) Reply { return Reply{} }) }()
		time.Sleep(10 * time.Millisecond) // let it go to sleep (it returns either way)
		if err := inst.Release(); err != nil {
			t.Fatal(err)
		}
		wantServeReturn(t, idle, ErrClosed, "while idle, after Release")
		close(finish)
		checkSecondary(t, c, c.next(20*time.Second))
		if err := <-busy; !errors.Is(err, ErrClosed) {
			t.Errorf("busy Serve: %v, want ErrClosed", err)
		}
	})
}

// Serve returns when its context ends while a handler runs: it does not
// go to sleep on the doorbell first.
func TestServeContextCancelInHandler(t *testing.T) {
	forEachBell(t, func(t *testing.T, bell uint32) {
		dir := testDir(t)
		inst := acquirePrimary(t, dir, bell)
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() {
			served <- inst.Serve(ctx, func(m *Message) Reply {
				cancel()
				time.Sleep(50 * time.Millisecond) // the context's ring comes before Serve looks again
				return Reply{Code: 3, Data: replyFor(m.Args)}
			})
		}()
		c := startChild(t, childOpts{dir: dir, bell: bell, args: []string{"quit"}})
		checkSecondary(t, c, c.next(20*time.Second))
		wantServeReturn(t, served, context.Canceled, "after its context ended in a handler")
	})
}

// baseName's hash is FNV-1a, 64 bits, of the id, key, scope and session
// joined by NULs: launches of other builds find the same names.
func TestBaseNameHash(t *testing.T) {
	for _, tc := range []struct{ id, key, session string }{
		{"com.example.editor", "", ""},
		{"com.example.editor", "profile 2", "wayland:wayland-0"},
		{strings.Repeat("a.very.long.application.id.", 3), "k", "x11::0"},
	} {
		for _, scope := range []Scope{ScopeSession, ScopeUser, ScopeMachine} {
			c := &config{key: tc.key, scope: scope}
			h := fnv.New64a()
			h.Write([]byte(strings.Join([]string{tc.id, tc.key, scope.String(), tc.session}, "\x00")))
			base := tc.id
			if len(base) > 40 {
				base = base[:40]
			}
			want := "go-instance-" + base + "-" + hex.EncodeToString(h.Sum(nil))
			if got := baseName(tc.id, c, tc.session); got != want {
				t.Errorf("baseName(%q, %q, %v, %q) = %q, want %q", tc.id, tc.key, scope, tc.session, got, want)
			}
		}
	}
}

// A handler that panics: its sender is answered with code 2, the panic
// goes on, and a program that recovers it can still release the instance,
// after which the next launch is the primary.
func TestServeHandlerPanics(t *testing.T) {
	forEachBell(t, func(t *testing.T, bell uint32) {
		dir := testDir(t)
		inst := acquirePrimary(t, dir, bell)
		recovered := make(chan any, 1)
		go func() {
			defer func() { recovered <- recover() }()
			inst.Serve(context.Background(), func(*Message) Reply { panic("handler") })
		}()
		c := startChild(t, childOpts{dir: dir, bell: bell, args: []string{"a"}})
		l := c.next(20 * time.Second)
		if f := strings.Fields(l); len(f) != 3 || f[0] != "SECONDARY" || f[1] != "2" {
			t.Errorf("launch: %q, want SECONDARY 2 and a message", l)
		}
		if r := <-recovered; r != "handler" {
			t.Errorf("recovered %v, want the handler's panic", r)
		}
		if err := inst.Release(); err != nil {
			t.Fatal(err)
		}
		next := startChild(t, childOpts{dir: dir, bell: bell, args: []string{"primary"}})
		if l := next.next(20 * time.Second); l != "PRIMARY" {
			t.Errorf("launch after Release: %q, want PRIMARY", l)
		}
	})
}
