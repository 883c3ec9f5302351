//go:build unix

package shm_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/go-instance/instance/shm"
)

const regionSize = 4096

func init() {
	childRoles["map-echo"] = childMapEcho
}

// newRegionFile creates a file of size bytes in a fresh directory and
// returns its path.
func newRegionFile(t *testing.T, size int) string {
	t.Helper()
	path := filepath.Join(tempDir(t), uniqueName(t)+".shm")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(int64(size)); err != nil {
		t.Fatal(err)
	}
	return path
}

// mapPath maps the first size bytes of the file at path, writable, and
// closes the file (the mapping outlives it).
func mapPath(path string, size int) (*shm.Region, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return shm.MapFile(f, 0, size, true)
}

func mustMap(t *testing.T, path string, size int) *shm.Region {
	t.Helper()
	r, err := mapPath(path, size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

var (
	parentMsg = []byte("written by the parent")
	childMsg  = []byte("written by the child")
)

const childMsgOff = 1024

// childMapEcho maps the file args[0], reports "mapped", waits for the
// parent's go-ahead, checks that the parent's bytes are in its mapping,
// then writes its own bytes for the parent to find in its mapping.
func childMapEcho(args []string) int {
	size, _ := strconv.Atoi(args[1])
	r, err := mapPath(args[0], size)
	if err != nil {
		return childFail("MapFile: %v", err)
	}
	defer r.Close()
	ready("mapped")
	if line := waitForParent(); line != "check" {
		return childFail("parent said %q", line)
	}
	b := r.Bytes()
	if got := b[:len(parentMsg)]; !bytes.Equal(got, parentMsg) {
		return childFail("child sees %q in its mapping, want %q", got, parentMsg)
	}
	copy(b[childMsgOff:], childMsg)
	ready("written")
	return 0
}

func TestMapFileCrossProcess(t *testing.T) {
	path := newRegionFile(t, regionSize)
	r := mustMap(t, path, regionSize)

	c := startChild(t, "map-echo", path, strconv.Itoa(regionSize))
	if line := c.readLine(); line != "mapped" {
		t.Fatalf("child said %q, want mapped", line)
	}
	// Written after the child mapped the file: only shared memory carries it.
	copy(r.Bytes(), parentMsg)
	c.send("check")
	if line := c.readLine(); line != "written" {
		t.Fatalf("child said %q, want written", line)
	}
	c.mustExit0()
	if got := r.Bytes()[childMsgOff : childMsgOff+len(childMsg)]; !bytes.Equal(got, childMsg) {
		t.Errorf("parent sees %q in its mapping, want %q", got, childMsg)
	}
}

func TestMapFileSizeAndBytes(t *testing.T) {
	const size = 100 // not a multiple of the page size
	path := newRegionFile(t, regionSize)
	r := mustMap(t, path, size)
	if r.Size() != size || len(r.Bytes()) != size {
		t.Fatalf("Size() = %d, len(Bytes()) = %d, want %d", r.Size(), len(r.Bytes()), size)
	}
}

func TestMapFileShorterThanSize(t *testing.T) {
	path := newRegionFile(t, 100)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := shm.MapFile(f, 0, 101, true)
	if err == nil {
		r.Close()
		t.Fatal("MapFile of a 100-byte file with size 101 succeeded")
	}
	msg := err.Error()
	for _, want := range []string{path, "100", "101", "shorter"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	// An empty file too.
	if err := f.Truncate(0); err != nil {
		t.Fatal(err)
	}
	if r, err := shm.MapFile(f, 0, 1, true); err == nil {
		r.Close()
		t.Fatal("MapFile of an empty file succeeded")
	}
}

func TestMapFileBadSize(t *testing.T) {
	path := newRegionFile(t, regionSize)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, size := range []int{0, -1} {
		if r, err := shm.MapFile(f, 0, size, true); err == nil {
			r.Close()
			t.Errorf("MapFile(size %d) succeeded", size)
		}
	}
}

func TestMapFileWritableNeedsWritableFile(t *testing.T) {
	path := newRegionFile(t, regionSize)
	f, err := os.Open(path) // read-only
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := shm.MapFile(f, 0, regionSize, true)
	if err == nil {
		r.Close()
		t.Fatal("writable MapFile of a read-only file succeeded")
	}
	var pe *fs.PathError
	if !errors.As(err, &pe) || pe.Path != path {
		t.Errorf("error %v (%T) is not a PathError for %s", err, err, path)
	}
	// Read-only mapping of the same file is fine.
	r, err = shm.MapFile(f, 0, regionSize, false)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
}

func TestMapFileReadOnlyFaultsOnWrite(t *testing.T) {
	path := newRegionFile(t, regionSize)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := shm.MapFile(f, 0, regionSize, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	faulted := func() (faulted bool) {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		defer func() { faulted = recover() != nil }()
		r.Bytes()[0] = 1
		return false
	}()
	if !faulted {
		t.Error("a write to a read-only mapping did not fault")
	}
}

func TestMapFileOutlivesFileAndFlush(t *testing.T) {
	path := newRegionFile(t, regionSize)
	r := mustMap(t, path, regionSize) // closes its *os.File
	copy(r.Bytes()[10:], parentMsg)
	if err := r.Flush(); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := data[10 : 10+len(parentMsg)]; !bytes.Equal(got, parentMsg) {
		t.Errorf("file holds %q, want %q", got, parentMsg)
	}
	// And the other way: a write to the file shows in the mapping.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(childMsg, 2000); err != nil {
		t.Fatal(err)
	}
	if got := r.Bytes()[2000 : 2000+len(childMsg)]; !bytes.Equal(got, childMsg) {
		t.Errorf("mapping holds %q after a write to the file, want %q", got, childMsg)
	}
}

func TestRegionCloseTwice(t *testing.T) {
	path := newRegionFile(t, regionSize)
	r, err := mapPath(path, regionSize)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestMapFileClosedFile(t *testing.T) {
	path := newRegionFile(t, regionSize)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if r, err := shm.MapFile(f, 0, regionSize, true); err == nil {
		r.Close()
		t.Fatal("MapFile of a closed file succeeded")
	}
}
