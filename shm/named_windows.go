//go:build windows

package shm

import (
	"encoding/hex"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/go-instance/instance/internal/rundir"
	"github.com/go-instance/instance/internal/winapi"
)

// objectName is the Local\ name of the object of a kind and name, with a
// hash of the user's SID so that another user's objects never collide.
func objectName(kind, name string) (string, error) {
	sid, err := userSID()
	if err != nil {
		return "", err
	}
	h := fnv.New64a() // see instance's baseName
	h.Write([]byte(sid))
	return `Local\go-instance-` + hex.EncodeToString(h.Sum(nil)[:6]) + "-" + kind + "-" + name, nil
}

var userSID = sync.OnceValues(func() (string, error) {
	sid, err := winapi.UserSID()
	if err != nil {
		return "", err
	}
	return sid.String(), nil
})

func create(name string, size int) (*Region, error) {
	obj, err := objectName("shm", name)
	if err != nil {
		return nil, err
	}
	r, existed, err := createMapping(obj, size, false)
	if err != nil {
		return nil, err // another user's object under the name, say
	}
	if existed {
		r.Close()
		return nil, &fs.PathError{Op: "create", Path: obj, Err: fs.ErrExist}
	}
	return r, nil
}

func open(name string) (*Region, error) {
	obj, err := objectName("shm", name)
	if err != nil {
		return nil, err
	}
	return openExisting(obj, 0, false)
}

// remove has nothing to do: a mapping's name goes with its last handle.
func remove(string) error { return nil }

func mutexPath(name string) (string, error) {
	dir, err := rundir.User()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "mutex-"+name), nil
}

func openMutexFile(name string) (*os.File, error) {
	path, err := mutexPath(name)
	if err != nil {
		return nil, err
	}
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
}

func openBell(word *uint32, name string, wait bool) (Doorbell, error) {
	obj, err := objectName("bell", name)
	if err != nil {
		return nil, err
	}
	return OpenEventBell(word, obj, 0o600, wait)
}
