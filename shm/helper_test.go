package shm_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Cross-process tests re-execute the test binary (STYLE.md item 10). The
// child learns its role from childEnv and its arguments from the words after
// "--" on its command line, reports readiness with lines on its standard
// output, and exits by itself once the parent's deadline (deadlineEnv)
// passes.
const (
	childEnv    = "SHM_TEST_CHILD"
	deadlineEnv = "SHM_TEST_DEADLINE"
)

// childRoles maps a role to the function that plays it; files register
// their roles in init. The function's result is the exit code.
var childRoles = map[string]func(args []string) int{}

func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		os.Exit(runChild(role))
	}
	os.Exit(m.Run())
}

func runChild(role string) int {
	fn, ok := childRoles[role]
	if !ok {
		fmt.Fprintf(os.Stderr, "shm test child: unknown role %q\n", role)
		return 2
	}
	if s := os.Getenv(deadlineEnv); s != "" {
		ns, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "shm test child: bad %s=%q\n", deadlineEnv, s)
			return 2
		}
		time.AfterFunc(time.Until(time.Unix(0, ns)), func() {
			fmt.Fprintf(os.Stderr, "shm test child %s: deadline passed\n", role)
			os.Exit(4)
		})
	}
	var args []string
	for i, a := range os.Args {
		if a == "--" {
			args = os.Args[i+1:]
			break
		}
	}
	return fn(args)
}

// childFail reports a failure of a child role on its standard error, where
// the parent picks it up.
func childFail(format string, args ...any) int {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	return 1
}

// ready writes one line to the parent.
func ready(format string, args ...any) {
	fmt.Fprintf(os.Stdout, format+"\n", args...)
}

// waitForParent blocks until the parent writes a line (or closes our
// standard input) and returns the line.
func waitForParent() string {
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	return strings.TrimSpace(line)
}

// hangDeadline is when a test gives up on something that should have
// happened: well before the test binary's own deadline, so that the failure
// names the culprit. It detects hangs; it is not a timing assertion.
func hangDeadline(t *testing.T) time.Time {
	d := time.Now().Add(2 * time.Minute)
	if td, ok := t.Deadline(); ok {
		td = td.Add(-time.Until(td) / 10)
		if td.Before(d) {
			d = td
		}
	}
	return d
}

type child struct {
	t      *testing.T
	role   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Reader
	stderr *syncBuffer

	waitOnce sync.Once
	waitErr  error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startChild re-executes the test binary in role with args. The child is
// killed when the hang deadline passes or the test ends.
func startChild(t *testing.T, role string, args ...string) *child {
	t.Helper()
	deadline := hangDeadline(t)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	cmdArgs := append([]string{"-test.run=^$", "--"}, args...)
	cmd := exec.CommandContext(ctx, os.Args[0], cmdArgs...)
	cmd.Env = append(os.Environ(),
		childEnv+"="+role,
		deadlineEnv+"="+strconv.FormatInt(deadline.UnixNano(), 10))
	if _, ok := os.LookupEnv("GORACE"); !ok {
		// Under -race, a child would otherwise sleep a second on exit.
		cmd.Env = append(cmd.Env, "GORACE=atexit_sleep_ms=0")
	}
	c := &child{t: t, role: role, cmd: cmd, stderr: new(syncBuffer)}
	cmd.Stderr = c.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.stdin, c.out = stdin, bufio.NewReader(stdout)
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting child %s: %v", role, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		c.wait()
		cancel()
	})
	return c
}

// readLine returns the child's next line of output, failing the test if the
// child exits (or is killed at the hang deadline) first.
func (c *child) readLine() string {
	c.t.Helper()
	line, err := c.out.ReadString('\n')
	if err != nil {
		err2 := c.wait()
		c.t.Fatalf("child %s: reading its output: %v (exit: %v)\nstderr:\n%s", c.role, err, err2, c.stderr)
	}
	return strings.TrimSpace(line)
}

// send writes one line to the child's standard input.
func (c *child) send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		c.t.Fatalf("child %s: writing to it: %v", c.role, err)
	}
}

func (c *child) wait() error {
	c.waitOnce.Do(func() { c.waitErr = c.cmd.Wait() })
	return c.waitErr
}

// mustExit0 waits for the child and fails the test unless it exited 0
// before the hang deadline.
func (c *child) mustExit0() {
	c.t.Helper()
	if err := c.wait(); err != nil {
		c.t.Fatalf("child %s: %v\nstderr:\n%s", c.role, err, c.stderr)
	}
}

// exitCode waits for the child and returns its exit code, failing the test
// if it was killed.
func (c *child) exitCode() int {
	c.t.Helper()
	err := c.wait()
	code := c.cmd.ProcessState.ExitCode()
	if code < 0 {
		c.t.Fatalf("child %s: %v\nstderr:\n%s", c.role, err, c.stderr)
	}
	return code
}

// tempDir is a short, unique temporary directory (FIFO and socket paths
// stay well under any length limit).
func tempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "shm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// uniqueName is the test's name plus a random suffix, usable as a file
// name.
func uniqueName(t *testing.T) string {
	var b [4]byte
	rand.Read(b[:])
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	if len(name) > 40 {
		name = name[:40]
	}
	return name + "-" + hex.EncodeToString(b[:])
}
