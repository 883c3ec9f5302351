//go:build unix

package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-instance/instance/shm"
)

// TestFault maps a file, truncates it and copies from the mapping: the
// SIGBUS of the pages past the end is an error naming an offset past the
// cut, not a crash. (Windows does not truncate a mapped file.)
func TestFault(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "shrinks")
	const size, cut = 16 << 20, 8 << 20
	if err := os.WriteFile(path, bytes.Repeat([]byte{1}, size), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := shm.MapFile(f, 0, size, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := os.Truncate(path, cut); err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, size)
	fl := copyMapped(dst, r.Bytes())
	// memmove may touch the end of a piece first: the fault is somewhere
	// past the cut.
	if fl == nil || !fl.src || fl.off < cut || fl.off >= size {
		t.Fatalf("copy from a mapping cut at %d: fault %+v, want one in the source past %d", cut, fl, cut)
	}
}

// TestInterrupt stops the command with SIGINT while it copies the 1 GiB
// file: it reports the interruption, exits with status 1 and leaves
// neither the destination nor its temporary file.
func TestInterrupt(t *testing.T) {
	if testing.Short() {
		t.Skip("copies 1 GiB; not with -short")
	}
	src := bigFile(t)
	dir := t.TempDir()
	dst := filepath.Join(dir, "dst")
	var stderr bytes.Buffer
	cmd := command(t, src, dst)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// The temporary file appears once the signal handler is in place.
	deadline := time.Now().Add(20 * time.Second)
	for {
		left, _ := filepath.Glob(filepath.Join(dir, tempPattern))
		if len(left) > 0 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("filecopy ended before it could be interrupted: %v, %s", err, stderr.Bytes())
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("no temporary file after 20s")
		}
		time.Sleep(time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := <-done
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(stderr.String(), "interrupted") {
		if err == nil {
			t.Skipf("the copy finished before the signal: %s", stderr.Bytes())
		}
		t.Fatalf("interrupted filecopy: %v, stderr %q; want exit status 1 and \"interrupted\"", err, stderr.Bytes())
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("interrupted copy made the destination: %v", err)
	}
	tempLeft(t, dir)
}

// TestSourceFIFO: a FIFO as SRC is refused before it is opened, which
// would wait for a writer.
func TestSourceFIFO(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(src, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- copyFile(context.Background(), src, filepath.Join(dir, "dst"), false, false, nil) }()
	select {
	case err := <-done:
		if !errors.Is(err, errNotFile) {
			t.Errorf("copy from a FIFO: %v, want an error matching %q", err, errNotFile)
		}
	case <-time.After(10 * time.Second):
		if w, err := os.OpenFile(src, os.O_WRONLY, 0); err == nil {
			w.Close() // the copy's open returns, and the test can end
		}
		t.Fatal("the copy from a FIFO still waits after 10s")
	}
	tempLeft(t, dir)
}
