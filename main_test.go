package instance

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-instance/instance/handoff"
)

// Cross-process tests re-execute the test binary. A child learns its part
// from the environment, reports on stdout one line per event, and reads its
// stdin: one byte to start (when asked to wait for the start), end-of-file
// to stop serving.
//
//	PRIMARY                      it became the primary
//	MSG <hex args> <hex dir>     (primary) a message arrived
//	SECONDARY <code> <hex data>  it was a secondary and got this reply
//	ERROR <kind> <text>          Acquire failed; kind is timeout or other
//	ENV <name> <hex value>       (primary) a forwarded variable, after MSG
//	SPAWNED <pid>                (primary) it started a child process
const (
	envRole    = "INSTANCE_TEST_ROLE"
	envDir     = "INSTANCE_TEST_DIR"
	envBell    = "INSTANCE_TEST_BELL"
	envArgs    = "INSTANCE_TEST_ARGS" // file with the encoded arguments
	envTimeout = "INSTANCE_TEST_TIMEOUT"
	envServe   = "INSTANCE_TEST_SERVE" // as primary: "reply" (default), "quiet" (no MSG lines) or "hang"
	envStall   = "INSTANCE_TEST_STALL" // as secondary: stop after sending this many chunks
	envBarrier = "INSTANCE_TEST_BARRIER"
	envSpawn   = "INSTANCE_TEST_SPAWN" // as primary: start a long-lived child process first
	envData    = "INSTANCE_TEST_DATA"  // payload size to send: payload(n)
	envScope   = "INSTANCE_TEST_SCOPE" // "machine": machine scope with INSTANCE_TEST_KEY, not a directory
	envKey     = "INSTANCE_TEST_KEY"
	envSlots   = "INSTANCE_TEST_SLOTS" // the region's slots, if not the default's
	testAppID  = "io.github.go-instance.test"
)

// childRoles are roles that OS-specific test files add.
var childRoles = map[string]func() int{}

func TestMain(m *testing.M) {
	if role := childRoles[os.Getenv(envRole)]; role != nil {
		os.Exit(role())
	}
	switch os.Getenv(envRole) {
	case "":
	case "sleep":
		time.Sleep(time.Minute)
		os.Exit(0)
	case "hello":
		os.Exit(0)
	case "baseline":
		os.Exit(serveBaseline())
	default:
		os.Exit(childMain())
	}
	os.Exit(m.Run())
}

// bells lists the doorbells this OS can run: both on Linux.
func bells() []uint32 {
	switch runtime.GOOS {
	case "linux":
		return []uint32{bellFutex, bellFIFO}
	case "windows":
		return []uint32{bellEvent}
	}
	return []uint32{bellFIFO}
}

func bellName(k uint32) string {
	return map[uint32]string{bellFutex: "futex", bellFIFO: "fifo", bellEvent: "event"}[k]
}

// forEachBell runs f as a subtest per doorbell kind.
func forEachBell(t *testing.T, f func(t *testing.T, bell uint32)) {
	for _, b := range bells() {
		t.Run(bellName(b), func(t *testing.T) { f(t, b) })
	}
}

// replyFor is what a test primary answers to args, so that each secondary
// can tell that it got its own reply.
func replyFor(args []string) []byte {
	sum := sha256.Sum256(encodeArgs(args))
	return []byte("ok:" + hex.EncodeToString(sum[:]))
}

func encodeArgs(args []string) []byte {
	m := handoff.Message{Args: args}
	b, err := m.Encode(nil)
	if err != nil {
		panic(err)
	}
	return b
}

func decodeArgs(b []byte) []string {
	m, err := handoff.DecodeMessage(b)
	if err != nil {
		panic(err)
	}
	if m.Args == nil {
		return []string{}
	}
	return m.Args
}

func childMain() int {
	stdin := bufio.NewReader(os.Stdin)
	if os.Getenv(envBarrier) != "" {
		fmt.Println("READY") // started, waiting for the start byte
		if _, err := stdin.ReadByte(); err != nil {
			fmt.Println("ERROR other no start byte:", err)
			return 0
		}
	}
	// Arguments come in a file: argv cannot hold every byte string on
	// every OS (Windows command lines are UTF-16), nor 4 MiB.
	b, err := os.ReadFile(os.Getenv(envArgs))
	if err != nil {
		fmt.Println("ERROR other", err)
		return 0
	}
	args := decodeArgs(b)
	var data []byte
	if n, err := strconv.Atoi(os.Getenv(envData)); err == nil {
		data = payload(n)
	}
	bell, _ := strconv.Atoi(os.Getenv(envBell))
	timeout, err := time.ParseDuration(os.Getenv(envTimeout))
	if err != nil {
		timeout = 20 * time.Second
	}
	if n, err := strconv.Atoi(os.Getenv(envStall)); err == nil {
		testHookChunkSent = func(chunk int) {
			if chunk == n {
				fmt.Println("STALLED")
				time.Sleep(time.Hour) // until killed (select{} would be a deadlock on Windows)
			}
		}
	}
	where := WithDir(os.Getenv(envDir))
	if os.Getenv(envScope) == "machine" {
		where = func(c *config) { WithScope(ScopeMachine)(c); WithKey(os.Getenv(envKey))(c) }
	}
	slots, _ := strconv.Atoi(os.Getenv(envSlots))
	inst, err := Acquire(testAppID, where, WithArgs(args), WithData(data),
		WithTimeout(timeout), withBell(uint32(bell)), WithMaxMessage(32<<20), withSlots(slots))
	if err != nil {
		kind := "other"
		if errors.Is(err, ErrTimeout) {
			kind = "timeout"
		}
		fmt.Println("ERROR", kind, strings.ReplaceAll(err.Error(), "\n", " "))
		return 0
	}
	if !inst.IsPrimary() {
		r := inst.Reply()
		fmt.Println("SECONDARY", r.Code, hex.EncodeToString(r.Data))
		return 0
	}
	fmt.Println("PRIMARY")
	if os.Getenv(envSpawn) != "" {
		// A child that outlives us must not keep our lock.
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), envRole+"=sleep")
		if err := cmd.Start(); err != nil {
			fmt.Println("ERROR other", err)
			return 0
		}
		fmt.Println("SPAWNED", cmd.Process.Pid)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		io.Copy(io.Discard, stdin)
		cancel()
	}()
	var out sync.Mutex
	inst.Serve(ctx, func(m *Message) Reply {
		if os.Getenv(envServe) == "quiet" {
			return Reply{Code: 3, Data: replyFor(m.Args)}
		}
		out.Lock()
		fmt.Println("MSG", hex.EncodeToString(encodeArgs(m.Args)), hex.EncodeToString([]byte(m.Dir)))
		for _, name := range slices.Sorted(maps.Keys(m.Env)) {
			fmt.Println("ENV", name, hex.EncodeToString([]byte(m.Env[name])))
		}
		out.Unlock()
		if os.Getenv(envServe) == "hang" {
			<-ctx.Done()
		}
		return Reply{Code: 3, Data: replyFor(m.Args)}
	})
	if err := inst.Release(); err != nil {
		fmt.Println("ERROR other release:", err)
	}
	return 0
}

// withSlots gives the region n slots, if n is not 0. The primary and every
// launch must agree.
func withSlots(n int) Option {
	return func(c *config) {
		if n != 0 {
			c.layout.Slots = n
		}
	}
}

// noExitSleep is the environment entry that keeps the race detector from
// sleeping a second at a child's exit.
func noExitSleep() string {
	return "GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")
}

// child is a re-executed test binary.
type child struct {
	t     testing.TB
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	args  []string
}

type childOpts struct {
	dir     string
	bell    uint32
	args    []string
	data    int // payload size
	timeout time.Duration
	serve   string
	stall   int
	ready   bool // wait for a start byte, after a READY line
	workdir string
	env     []string // added to the child's environment
	spawn   bool
	scope   string // "machine": use machine scope and key instead of dir
	key     string
	slots   int // see withSlots
}

func startChild(t testing.TB, o childOpts) *child {
	t.Helper()
	c, err := spawnChild(t, o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// spawnChild is startChild for goroutines other than the test's, which must
// not call t.Fatal.
func spawnChild(t testing.TB, o childOpts) (*child, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	env := append(os.Environ(),
		envRole+"=launch",
		envDir+"="+o.dir,
		envBell+"="+strconv.Itoa(int(o.bell)),
		envTimeout+"="+o.timeout.String(),
		envServe+"="+o.serve,
		noExitSleep(),
	)
	if o.ready {
		env = append(env, envBarrier+"=1")
	}
	if o.spawn {
		env = append(env, envSpawn+"=1")
	}
	if o.scope != "" {
		env = append(env, envScope+"="+o.scope, envKey+"="+o.key)
	}
	env = append(env, o.env...)
	if o.stall > 0 {
		env = append(env, envStall+"="+strconv.Itoa(o.stall))
	}
	if o.slots > 0 {
		env = append(env, envSlots+"="+strconv.Itoa(o.slots))
	}
	f, err := os.CreateTemp(t.TempDir(), "args")
	if err != nil {
		return nil, err
	}
	f.Write(encodeArgs(o.args))
	f.Close()
	env = append(env, envArgs+"="+f.Name())
	if o.data > 0 {
		env = append(env, envData+"="+strconv.Itoa(o.data))
	}
	if o.timeout == 0 {
		o.timeout = 20 * time.Second
		env = append(env, envTimeout+"="+o.timeout.String())
	}
	// Wine sometimes fails to start a process when many start at once
	// ("Internal error"): try again, with a fresh Cmd, before giving up.
	var stdin io.WriteCloser
	var stdout io.ReadCloser
	for try := 0; ; try++ {
		cmd.Env = env
		cmd.Dir = o.workdir
		cmd.Stderr = os.Stderr
		var err error
		if stdin, err = cmd.StdinPipe(); err != nil {
			return nil, err
		}
		if stdout, err = cmd.StdoutPipe(); err != nil {
			return nil, err
		}
		if err = cmd.Start(); err == nil {
			break
		}
		if try == 4 {
			return nil, err
		}
		time.Sleep(100 * time.Millisecond)
		cmd = exec.Command(cmd.Path, cmd.Args[1:]...)
	}
	c := &child{t: t, cmd: cmd, stdin: stdin, lines: make(chan string, 64), args: o.args}
	go func() {
		defer close(c.lines)
		s := bufio.NewScanner(stdout)
		s.Buffer(nil, 64<<20)
		for s.Scan() {
			c.lines <- s.Text()
		}
	}()
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		c.cmd.Wait()
	})
	return c, nil
}

// startAll starts a child for each of opts, held at the barrier after a
// READY line, and returns them once each has printed it: the caller then
// releases them together. Wine now and then fails a process in the Go
// runtime's start, before any code of ours runs ("Failed to load
// ws2_32.dll: DLL initialization failed"); such a child, gone before its
// READY, is started again, as spawnChild retries a start that fails.
func startAll(t *testing.T, opts []childOpts) []*child {
	t.Helper()
	kids := make([]*child, len(opts))
	for i, o := range opts {
		o.ready = true
		kids[i] = startChild(t, o)
	}
	for i, o := range opts {
		o.ready = true
		for try := 1; ; try++ {
			l := kids[i].next(60 * time.Second)
			if l == "READY" {
				break
			}
			if l != "EOF" || try == 3 {
				t.Fatalf("child %d: %q, want READY", kids[i].cmd.Process.Pid, l)
			}
			kids[i].cmd.Wait()
			t.Logf("child %d ended before it ran (%v): started again", kids[i].cmd.Process.Pid, kids[i].cmd.ProcessState)
			kids[i] = startChild(t, o)
		}
	}
	return kids
}

// spawnReady is startAll for one child, for goroutines other than the
// test's: it returns the child at the barrier, after its READY.
func spawnReady(t testing.TB, o childOpts) (*child, error) {
	o.ready = true
	for try := 1; ; try++ {
		c, err := spawnChild(t, o)
		if err != nil {
			return nil, err
		}
		l, ok := <-c.lines
		if ok && l == "READY" {
			return c, nil
		}
		if ok || try == 3 {
			return nil, fmt.Errorf("child %d: %q, want READY", c.cmd.Process.Pid, l)
		}
		c.cmd.Wait()
		t.Logf("child %d ended before it ran (%v): started again", c.cmd.Process.Pid, c.cmd.ProcessState)
	}
}

// next returns the child's next line, or "EOF" when it has exited.
func (c *child) next(timeout time.Duration) string {
	c.t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			return "EOF"
		}
		return l
	case <-time.After(timeout):
		dumpStacks(c.cmd.Process) // to the test's stderr, to tell where it hangs
		c.t.Fatalf("child %d: no output within %v", c.cmd.Process.Pid, timeout)
		return ""
	}
}

func (c *child) kill() {
	c.cmd.Process.Kill()
	c.cmd.Wait()
}

// stop ends a primary's serving and returns the messages it reported.
func (c *child) stop(timeout time.Duration) (msgs []string) {
	c.t.Helper()
	c.stdin.Close()
	for {
		l := c.next(timeout)
		if l == "EOF" {
			return msgs
		}
		if strings.HasPrefix(l, "MSG ") || strings.HasPrefix(l, "ENV ") {
			msgs = append(msgs, l)
		} else {
			c.t.Errorf("primary %d: unexpected line %q", c.cmd.Process.Pid, l)
		}
	}
}

// parseMsg splits a MSG line.
func parseMsg(t *testing.T, l string) (args []string, dir string) {
	t.Helper()
	f := strings.Fields(l)
	if len(f) < 2 || f[0] != "MSG" {
		t.Fatalf("not a MSG line: %q", l)
	}
	a, err := hex.DecodeString(f[1])
	if err != nil {
		t.Fatal(err)
	}
	var d []byte
	if len(f) > 2 {
		d, _ = hex.DecodeString(f[2])
	}
	return decodeArgs(a), string(d)
}

// checkSecondary checks a SECONDARY line against the child's arguments.
func checkSecondary(t *testing.T, c *child, l string) {
	t.Helper()
	f := strings.Fields(l)
	if len(f) < 2 || f[0] != "SECONDARY" {
		t.Errorf("child %d: want SECONDARY, got %q", c.cmd.Process.Pid, l)
		return
	}
	var data []byte
	if len(f) > 2 {
		data, _ = hex.DecodeString(f[2])
	}
	if f[1] != "3" || string(data) != string(replyFor(c.args)) {
		t.Errorf("child %d: reply code %s data %q, want 3 %q", c.cmd.Process.Pid, f[1], data, replyFor(c.args))
	}
}

// payload is n bytes that a test can check: every byte value, repeated.
func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

// filesFor names the files of the test's instance in dir, or, if dir is
// empty, in the per-user directory.
func filesFor(t *testing.T, dir string) *files {
	t.Helper()
	c, err := newConfig(testAppID, []Option{WithDir(dir)})
	if err != nil {
		t.Fatal(err)
	}
	f, err := openFiles(c, testAppID)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func testDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "inst")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
