package main

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// With SINGLE_TEST_MAIN set the test binary runs main, so the test runs
// the program as its doc shows.
func TestMain(m *testing.M) {
	if os.Getenv("SINGLE_TEST_MAIN") != "" {
		os.Args = append([]string{os.Args[0]}, strings.Fields(os.Getenv("SINGLE_TEST_MAIN"))...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func command(args string) *exec.Cmd {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "SINGLE_TEST_MAIN="+args)
	return cmd
}

func TestSecondLaunchForwards(t *testing.T) {
	first := command("-for 20s")
	out, _ := first.StdoutPipe()
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	defer first.Process.Kill()
	r := bufio.NewReader(out)
	if line, _ := r.ReadString('\n'); !strings.Contains(line, "the only instance") {
		t.Fatalf("first launch printed %q", line)
	}
	o, err := command("hello world").CombinedOutput()
	if err != nil || !strings.Contains(string(o), "got [hello world]") {
		t.Fatalf("second launch: %v: %s", err, o)
	}
	if line, _ := r.ReadString('\n'); !strings.Contains(line, `sent ["hello" "world"]`) {
		t.Errorf("the first launch printed %q", line)
	}
}

func TestUsage(t *testing.T) {
	err := command("-for -1s").Run()
	if e, ok := err.(*exec.ExitError); !ok || e.ExitCode() != 2 {
		t.Errorf("-for -1s: %v, want exit status 2", err)
	}
}
