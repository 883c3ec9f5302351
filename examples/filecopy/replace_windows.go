//go:build windows

package main

import (
	"errors"
	"io/fs"
	"os"

	"golang.org/x/sys/windows"
)

// rename gives tmp the name dst, written through to disk before it
// returns. Without force it fails if dst exists, created since it was
// checked or not.
func rename(tmp, dst string, force bool) error {
	from, err := windows.UTF16PtrFromString(tmp)
	if err != nil {
		return &os.LinkError{Op: "MoveFileEx", Old: tmp, New: dst, Err: err}
	}
	to, err := windows.UTF16PtrFromString(dst)
	if err != nil {
		return &os.LinkError{Op: "MoveFileEx", Old: tmp, New: dst, Err: err}
	}
	flags := uint32(windows.MOVEFILE_WRITE_THROUGH)
	if force {
		flags |= windows.MOVEFILE_REPLACE_EXISTING
	}
	err = windows.MoveFileEx(from, to, flags)
	if errors.Is(err, windows.ERROR_ALREADY_EXISTS) || errors.Is(err, windows.ERROR_FILE_EXISTS) {
		return &fs.PathError{Op: "copy to", Path: dst, Err: fs.ErrExist}
	}
	if err != nil {
		return &os.LinkError{Op: "MoveFileEx", Old: tmp, New: dst, Err: err}
	}
	return nil
}

// syncDir does nothing: MOVEFILE_WRITE_THROUGH made the rename durable.
func syncDir(string) error { return nil }
