package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
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

	var out bytes.Buffer
	consumer := command("consumer", "-timeout", "20s", name)
	consumer.Stdout, consumer.Stderr = &out, &out
	if err := consumer.Start(); err != nil {
		t.Fatal(err)
	}
	// The consumer signals nothing; give it time to start waiting, then
	// provide until it has read (a provider before it waits is missed, as
	// in the article).
	done := make(chan error, 1)
	go func() { done <- consumer.Wait() }()
	for {
		if p, err := command("provider", name, "hello", "from", "the", "provider").CombinedOutput(); err != nil {
			t.Fatalf("provider: %v: %s", err, p)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("consumer: %v: %s", err, out.String())
			}
			if !strings.Contains(out.String(), `consumer: read "hello from the provider"`) {
				t.Fatalf("consumer printed %q", out.String())
			}
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"provider", "x"}, {"bogus", "x"}} {
		err := command(args...).Run()
		if e, ok := err.(*exec.ExitError); !ok || e.ExitCode() != 2 {
			t.Errorf("%q: %v, want exit status 2", args, err)
		}
	}
}
