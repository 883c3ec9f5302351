// Command demo shows instance at work in one command: it becomes the
// primary of a demo application, then launches copies of itself as
// secondaries, each with other arguments. Every secondary forwards its
// arguments and working directory, the primary answers, and each secondary
// prints the answer and exits with the code it was given.
//
//	go run ./examples/demo
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"

	"github.com/go-instance/instance"
)

const appID = "io.github.go-instance.demo"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	// Each run keeps its files in a directory of its own, removed at the
	// end, so that two demos never meet and nothing is left behind.
	dir := os.Getenv("DEMO_DIR")
	secondary := dir != ""
	if !secondary {
		var err error
		if dir, err = os.MkdirTemp("", "instance-demo-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	inst, err := instance.Acquire(appID, instance.WithDir(dir), instance.WithArgs(os.Args[1:]))
	if err != nil {
		return err
	}
	if !inst.IsPrimary() {
		r := inst.Reply()
		fmt.Printf("  secondary %d: primary replied %q, exit code %d\n", os.Getpid(), r.Data, r.Code)
		os.Exit(r.Code)
	}
	if secondary {
		return fmt.Errorf("launched as a secondary but became the primary")
	}
	defer inst.Release()
	fmt.Printf("primary %d: serving %s\n", os.Getpid(), appID)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var served sync.WaitGroup
	served.Add(1)
	go func() {
		defer served.Done()
		inst.Serve(ctx, func(m *instance.Message) instance.Reply {
			fmt.Printf("primary: message from pid %d in %s: args %q\n", m.PID, m.Dir, m.Args)
			return instance.Reply{Code: len(m.Args), Data: []byte("opened " + strings.Join(m.Args, ", "))}
		})
	}()

	exe, err := os.Executable()
	if err != nil {
		return err
	}
	launches := [][]string{
		{"notes.txt"},
		{"report.pdf", "--new-window"},
		{"ünïcödé.md", "", "日本語.txt"},
	}
	for _, args := range launches {
		fmt.Printf("launching secondary with %q\n", args)
		cmd := exec.Command(exe, args...)
		cmd.Env = append(os.Environ(), "DEMO_DIR="+dir)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		err := cmd.Run()
		var exit *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &exit) && exit.ExitCode() == len(args):
		default:
			return fmt.Errorf("secondary %q: %v", args, err)
		}
		fmt.Printf("  secondary exited with code %d\n", cmd.ProcessState.ExitCode())
	}
	cancel()
	served.Wait()
	fmt.Println("done: every launch was forwarded to the primary and answered")
	return nil
}
