//go:build unix

// Package rundir finds the per-user directory where package instance keeps
// its lock and region files and package shm its named regions, and checks
// that it is safe to use.
package rundir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// User returns the per-user directory: inside the sandbox's runtime
// directory for Flatpak, else $XDG_RUNTIME_DIR/go-instance when
// $XDG_RUNTIME_DIR is usable, else go-instance-<uid> in the fallback
// directory (see tempDir); each created 0700 if missing and verified.
func User() (string, error) {
	uid := EUID()
	rt := os.Getenv("XDG_RUNTIME_DIR")
	if os.Getenv("SNAP_INSTANCE_NAME") != "" && filepath.IsAbs(rt) {
		os.Mkdir(rt, 0o700) // a snap's own runtime directory is the app's to make
	}
	if rt != "" && filepath.IsAbs(rt) && checkDir(rt, uid) == nil {
		if id := flatpakID(); id != "" {
			if app := filepath.Join(rt, "app", id); checkDir(app, uid) == nil {
				rt = app
			}
		}
		return makeDir(filepath.Join(rt, "go-instance"), uid)
	}
	return makeDir(tempDir(uid), uid)
}

// Likely returns the directory that User returns when every directory
// passes its checks, without checking any or making a system call (but
// EUID's first). A lock file found there, a regular file of this user's
// with one link, vouches for it: only this user can have put it there
// (package instance trusts such a file for a secondary, whose primary
// checked the directories). Where User would choose another directory,
// the file is missing or the caller checks the directory.
func Likely() string {
	if rt := os.Getenv("XDG_RUNTIME_DIR"); rt != "" && filepath.IsAbs(rt) {
		if id := flatpakID(); id != "" {
			rt = filepath.Join(rt, "app", id)
		}
		return filepath.Join(rt, "go-instance")
	}
	base := os.TempDir()
	if memPath != "" && os.Getenv("TMPDIR") == "" {
		base = memPath // unchecked: a missing tmpfs only means no file there
	}
	return tempIn(base, EUID())
}

// flatpakID is the sandboxed app's id, if it is one that names a directory.
func flatpakID() string {
	if id := os.Getenv("FLATPAK_ID"); !strings.ContainsAny(id, "/\x00") {
		return id
	}
	return ""
}

// tempDir is the fallback: $TMPDIR when it is set, else a directory in
// memory where the system has one for all users (memDir), else /tmp. Like
// $XDG_RUNTIME_DIR, memory keeps a region's pages from being written back
// to a disk, which costs every write to them a fault after each
// write-back.
func tempDir(uid int) string {
	base := os.TempDir()
	if os.Getenv("TMPDIR") == "" {
		if mem := memDir(); mem != "" {
			base = mem
		}
	}
	return tempIn(base, uid)
}

func tempIn(base string, uid int) string {
	return filepath.Join(base, "go-instance-"+strconv.Itoa(uid))
}

// InTemp reports whether dir, from User, is the fallback, which cleaners
// may sweep ($XDG_RUNTIME_DIR is not swept).
func InTemp(dir string) bool { return dir == tempDir(EUID()) }

// EUID is the process's effective user id when first asked: the kernel
// is asked once, not at each launch.
var EUID = sync.OnceValue(os.Geteuid)

// makeDir checks dir, and makes it first if it is missing (checked first:
// a system call less, each launch, in the usual case).
func makeDir(dir string, uid int) (string, error) {
	err := checkDir(dir, uid)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.Mkdir(dir, 0o700); err == nil || errors.Is(err, fs.ErrExist) {
			err = checkDir(dir, uid)
		}
	}
	if err != nil {
		return "", err
	}
	return dir, nil
}

// checkDir accepts a real directory (not a symbolic link) owned by uid and
// closed to group and others.
func checkDir(dir string, uid int) error {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return &fs.PathError{Op: "lstat", Path: dir, Err: err}
	}
	var why string
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		why = "is a symbolic link"
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		why = "is not a directory"
	case int(st.Uid) != uid:
		why = fmt.Sprintf("is owned by uid %d, not %d", st.Uid, uid)
	case st.Mode&0o077 != 0:
		why = fmt.Sprintf("has mode %#o, want no group or other access", st.Mode&0o777)
	default:
		return nil
	}
	return fmt.Errorf("unsafe per-user directory %s: it %s", dir, why)
}
