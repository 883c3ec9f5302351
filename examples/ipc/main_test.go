package main

import (
	"bufio"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/go-instance/instance/shm"
)

// The test binary is the program too: with IPC_TEST_MAIN set it runs main,
// so the test runs the commands as the package doc shows, on every OS
// (under Wine as well, where no go build is at hand).
func TestMain(m *testing.M) {
	if os.Getenv("IPC_TEST_MAIN") != "" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func command(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "IPC_TEST_MAIN=1")
	return cmd
}

func TestProviderConsumer(t *testing.T) {
	const name = "ipc-test" // fixed: the mutex file stays, as lock files do
	command("remove", name).Run()
	defer command("remove", name).Run()

	consumer := command("consumer", "-timeout", "20s", name)
	consumer.Stderr = os.Stderr
	stdout, err := consumer.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := consumer.Start(); err != nil {
		t.Fatal(err)
	}
	defer consumer.Process.Kill()
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || !strings.HasPrefix(lines.Text(), "consumer: waiting") {
		t.Fatalf("consumer printed %q, want it waiting", lines.Text())
	}
	if p, err := command("provider", name, "hello", "from", "the", "provider").CombinedOutput(); err != nil {
		t.Fatalf("provider: %v: %s", err, p)
	}
	if !lines.Scan() || lines.Text() != `consumer: read "hello from the provider"` {
		t.Fatalf("consumer printed %q", lines.Text())
	}
	if err := consumer.Wait(); err != nil {
		t.Fatalf("consumer: %v", err)
	}
}

// On Unix the region outlives the provider, and its data waits for a
// consumer, which reads it once.
func TestProviderFirst(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("on Windows a region vanishes with the provider that made it (see the package doc)")
	}
	const name = "ipc-test-first"
	command("remove", name).Run()
	defer command("remove", name).Run()
	if p, err := command("provider", name, "early").CombinedOutput(); err != nil {
		t.Fatalf("provider: %v: %s", err, p)
	}
	out, err := command("consumer", "-timeout", "20s", name).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `consumer: read "early"`) {
		t.Fatalf("consumer: %v: %s", err, out)
	}
	out, err = command("consumer", "-timeout", "100ms", name).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no provider signalled") {
		t.Fatalf("second consumer: %v: %s; want it to find nothing", err, out)
	}
}

func TestUsage(t *testing.T) {
	const name = "ipc-test-usage"
	command("remove", name).Run()
	bad := [][]string{nil, {"provider", "x"}, {"bogus", "x"}, {"consumer", "-timeout", "0s", name}}
	if runtime.GOOS != "windows" { // whose command lines end at 32767 characters
		bad = append(bad, []string{"provider", name, strings.Repeat("x", 64<<10)})
	}
	for _, args := range bad {
		err := command(args...).Run()
		if e, ok := err.(*exec.ExitError); !ok || e.ExitCode() != 2 {
			t.Errorf("%.40q: %v, want exit status 2", args, err)
		}
	}
	// Refused before anything was made.
	if r, err := shm.Open(name); err == nil {
		r.Close()
		t.Errorf("bad input made the region %s", name)
	}
}
