package main

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/go-instance/instance/shm"
)

// With SHAREDSTRUCT_TEST_MAIN set the test binary runs main, so the test
// runs the program as the package doc shows, on every OS.
func TestMain(m *testing.M) {
	if os.Getenv("SHAREDSTRUCT_TEST_MAIN") != "" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func command(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "SHAREDSTRUCT_TEST_MAIN=1")
	return cmd
}

// Two processes: one interactive, one running commands; each sees the
// other's changes.
func TestTwoProcesses(t *testing.T) {
	const name = "sharedstruct-test" // fixed: the mutex file stays, as lock files do
	shm.Remove(name)
	defer shm.Remove(name)

	a := command("-name", name)
	stdin, _ := a.StdinPipe()
	stdout, _ := a.StdoutPipe()
	a.Stderr = os.Stderr
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.Process.Kill()
	out := bufio.NewReader(stdout)
	// Reads the interactive process's answer to a command.
	ask := func(cmd string) string {
		t.Helper()
		if _, err := stdin.Write([]byte(cmd + "\n")); err != nil {
			t.Fatal(err)
		}
		for {
			line, err := out.ReadString('\n')
			if err != nil {
				t.Fatalf("interactive process: %v", err)
			}
			if i := strings.Index(line, "Counter="); i >= 0 {
				return strings.TrimSpace(line[i:])
			}
		}
	}
	tell := func(cmd string) {
		t.Helper()
		if _, err := stdin.Write([]byte(cmd + "\n")); err != nil {
			t.Fatal(err)
		}
	}
	ask("show")
	tell("inc") // prints nothing
	if got := ask("show"); !strings.HasPrefix(got, "Counter=1 ") {
		t.Fatalf("after inc: %q", got)
	}
	// The other process sees it, changes it, and the first sees that.
	o, err := command("-name", name, "show", "inc", "set", "from the other", "move", "1.5", "-2").CombinedOutput()
	if err != nil || !strings.Contains(string(o), "Counter=1 ") {
		t.Fatalf("other process: %v: %s", err, o)
	}
	got := ask("show")
	if !strings.HasPrefix(got, "Counter=2 X=1.5 Y=-2 Note=\"from the other\"") {
		t.Fatalf("the first process sees %q", got)
	}
	// A line runs each of its commands, as the arguments do; a set
	// without a text is refused there too, and keeps the note.
	if got := ask("inc show"); !strings.HasPrefix(got, "Counter=3 ") {
		t.Fatalf("after inc show: %q", got)
	}
	tell("set")
	if got := ask("show"); !strings.Contains(got, `Note="from the other"`) {
		t.Fatalf("after a set without text: %q", got)
	}
	stdin.Write([]byte("quit\n"))
	if err := a.Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestBadCommand(t *testing.T) {
	for _, c := range []struct{ args, want string }{
		{"frobnicate", "unknown command"},
		{"set " + strings.Repeat("é", 33), "66 bytes, the note holds 64"}, // not cut in a character
	} {
		o, err := command(append([]string{"-name", "sharedstruct-test"}, strings.SplitN(c.args, " ", 2)...)...).CombinedOutput()
		if e, ok := err.(*exec.ExitError); !ok || e.ExitCode() != 1 || !strings.Contains(string(o), c.want) {
			t.Errorf("%.20s: %v: %s", c.args, err, o)
		}
	}
}
