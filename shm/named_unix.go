//go:build unix

package shm

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"

	"github.com/go-instance/instance/internal/rundir"
	"golang.org/x/sys/unix"
)

// namedPath is where the object of a kind and name lives.
func namedPath(kind, name string) (string, error) {
	dir, err := rundir.User()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, kind+"-"+name), nil
}

// create sizes a new file under a temporary name, then links it in place:
// link fails if the name is taken, and nobody ever sees a file of the
// wrong size.
func create(name string, size int) (*Region, error) {
	path, err := namedPath("shm", name)
	if err != nil {
		return nil, err
	}
	// No secret needed: a clash fails (O_EXCL), and only the user can write
	// in the directory.
	tmp := path + "." + strconv.FormatUint(rand.Uint64(), 16) + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp)
	defer f.Close()
	if err := f.Truncate(int64(size)); err != nil {
		return nil, err
	}
	if err := reserve(f, size); err != nil {
		return nil, err
	}
	r, err := MapFile(f, 0, size, true)
	if err != nil {
		return nil, err
	}
	if err := os.Link(tmp, path); err != nil {
		r.Close()
		return nil, err // *LinkError matching fs.ErrExist when taken
	}
	return r, nil
}

func open(name string) (*Region, error) {
	path, err := namedPath("shm", name)
	if err != nil {
		return nil, err
	}
	f, err := openOwn(path, os.O_RDWR)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() == 0 || st.Size() > int64(maxInt) {
		return nil, &fs.PathError{Op: "open", Path: path, Err: fmt.Errorf("region of %d bytes", st.Size())}
	}
	return MapFile(f, 0, int(st.Size()), true)
}

func remove(name string) error {
	path, err := namedPath("shm", name)
	if err != nil {
		return err
	}
	return os.Remove(path)
}

func mutexPath(name string) (string, error) { return namedPath("mutex", name) }

func openMutexFile(name string) (*os.File, error) {
	path, err := mutexPath(name)
	if err != nil {
		return nil, err
	}
	return openOwn(path, os.O_RDWR|os.O_CREATE)
}

// openOwn opens path without following a symbolic link and checks that it
// is a regular file of this user.
func openOwn(path string, flag int) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := fstat(f, &st); err != nil {
		f.Close()
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || int(st.Uid) != os.Geteuid() {
		f.Close()
		return nil, &fs.PathError{Op: "open", Path: path, Err: errors.New("not a regular file of this user")}
	}
	return f, nil
}

func openBell(word *uint32, name string, wait bool) (Doorbell, error) {
	if runtime.GOOS == "linux" {
		return NewFutexBell(word)
	}
	path, err := namedPath("bell", name)
	if err != nil {
		return nil, err
	}
	return OpenFIFOBell(word, path, 0o600, wait)
}
