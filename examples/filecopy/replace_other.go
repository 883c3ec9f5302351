//go:build !windows

package main

import (
	"errors"
	"io/fs"
	"os"
)

// rename gives tmp the name dst. Without force it must not replace a dst
// created since it was checked: a hard link fails if dst exists (where
// hard links are not supported, rename it is).
func rename(tmp, dst string, force bool) error {
	if !force {
		err := os.Link(tmp, dst)
		if err == nil {
			return os.Remove(tmp)
		}
		if errors.Is(err, fs.ErrExist) {
			return &fs.PathError{Op: "copy to", Path: dst, Err: fs.ErrExist}
		}
	}
	return os.Rename(tmp, dst)
}

// syncDir writes dir's entries to disk, so that a rename in it survives a
// crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
