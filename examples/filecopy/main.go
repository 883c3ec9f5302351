// Command filecopy is the file copy of the memory-mapped-file article, done
// properly: the source is mapped read-only and the destination read-write,
// one window of at most 64 MiB at a time, so files of any size copy in
// bounded memory.
//
//	filecopy [-f] [-sync] SRC DST
//
// It refuses a DST that exists (unless -f), is a directory or is SRC
// itself (also through a link), and it never leaves a partial DST: the copy
// goes to a temporary file beside DST, gets SRC's permission bits and only
// then takes DST's name. On an error, or on SIGINT or SIGTERM, the
// temporary file is removed and DST is unchanged (a copy killed outright,
// by SIGKILL or a crash, leaves its .filecopy-*.tmp file in DST's
// directory, for the user to remove). With -sync the copy is
// also written to disk before it takes DST's name, so that it survives a
// crash as well (cp does not do that, and it costs an fsync). Errors exit
// with status 1, wrong arguments with status 2.
//
// Details:
//
//   - An empty SRC maps nothing. Holes of a sparse SRC (found with
//     SEEK_DATA on Linux, macOS and FreeBSD) are not mapped and stay holes
//     in DST.
//   - Each window is copied by up to four goroutines: most of the time of
//     a copy through mappings goes to the kernel's page faults, which run in
//     the faulting thread, so spreading them over the cores pays.
//   - A memory fault while copying (SRC shrank under the copy, or DST's
//     disk is full: a write fault that cannot get a block is SIGBUS) is an
//     error, not a crash.
//   - Durability (-sync): on Linux a shared mapping is the file's page
//     cache, so one fsync at the end writes every window's pages; elsewhere
//     each window is also flushed (msync, FlushViewOfFile) before it is
//     unmapped, as those systems ask. The data is on disk before DST is
//     renamed, and the directory is synced after it (Unix), so after a
//     crash DST is the old file or the whole copy, never a torn one.
//   - DST is replaced as a name: if it is a symbolic link, the link is
//     replaced, not the file it points to. Without -f, DST is taken with a
//     hard link where the file system has them, so a DST created meanwhile
//     is not overwritten either. Owner and times are not copied.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/go-instance/instance/shm"
)

const (
	// window is the most of each file mapped at a time: a multiple of
	// every shm.Granularity, and large enough that mapping costs nothing
	// next to copying.
	window = 64 << 20

	// Each window is split between up to maxWorkers goroutines, in pieces
	// of at least minPiece bytes.
	maxWorkers = 4
	minPiece   = 4 << 20

	// flushViews: with -sync, flush each destination window before
	// unmapping it. Not on Linux, where the final fsync covers the pages of
	// the mappings.
	flushViews = runtime.GOOS != "linux"

	// tempPattern names the temporary file in DST's directory.
	tempPattern = ".filecopy-*.tmp"
)

var (
	errSameFile = errors.New("is the same file as the source")
	errIsDir    = errors.New("is a directory")
	errNotFile  = errors.New("is not a regular file")
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

// run is the command: its result is the exit status.
func run(args []string, stderr io.Writer) int {
	flags := flag.NewFlagSet("filecopy", flag.ContinueOnError)
	flags.SetOutput(stderr)
	force := flags.Bool("f", false, "replace DST if it exists")
	durable := flags.Bool("sync", false, "write the copy to disk before it takes DST's name")
	flags.Usage = func() {
		fmt.Fprintln(stderr, "usage: filecopy [-f] [-sync] SRC DST")
		flags.PrintDefaults()
	}
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if flags.NArg() != 2 {
		flags.Usage()
		return 2
	}
	// The first signal cancels the copy, which then removes its temporary
	// file; a second one kills the process as usual, once the first has
	// given the signals back.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)
	err := copyFile(ctx, flags.Arg(0), flags.Arg(1), *force, *durable, nil)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, fs.ErrExist) && !*force:
		fmt.Fprintf(stderr, "filecopy: %v (-f replaces it)\n", err)
	case ctx.Err() != nil:
		fmt.Fprintf(stderr, "filecopy: interrupted; %s is unchanged\n", flags.Arg(1))
	default:
		fmt.Fprintln(stderr, "filecopy:", err)
	}
	return 1
}

// phases, when given to copyFile, receives how long the copy took before
// and in its final fsync, if durable (for the benchmark).
type phases struct{ copy, sync time.Duration }

// copyFile copies the file src to dst as the package doc describes; durable
// is -sync. A canceled ctx stops the copy between windows, and before dst
// is replaced.
func copyFile(ctx context.Context, src, dst string, force, durable bool, ph *phases) (err error) {
	start := time.Now()
	// Checked before it is opened too: opening a FIFO waits for a writer.
	if si, err := os.Stat(src); err != nil {
		return err
	} else if err := checkRegular(src, si); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	si, err := in.Stat()
	if err != nil {
		return err
	}
	if err := checkRegular(src, si); err != nil {
		return err
	}
	switch di, err := os.Stat(dst); {
	case err == nil:
		if os.SameFile(si, di) {
			return &fs.PathError{Op: "copy to", Path: dst, Err: errSameFile}
		}
		if err := checkRegular(dst, di); err != nil {
			return err
		}
		if !force {
			return &fs.PathError{Op: "copy to", Path: dst, Err: fs.ErrExist}
		}
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}

	out, err := os.CreateTemp(filepath.Dir(dst), tempPattern)
	if err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	tmp := out.Name()
	defer func() {
		if err != nil {
			out.Close()
			os.Remove(tmp) // on Windows, read-only or not
		}
	}()
	size := si.Size()
	if err := out.Truncate(size); err != nil {
		return err
	}
	if err := copyData(ctx, in, out, size, durable && flushViews); err != nil {
		return err
	}
	if err := out.Chmod(si.Mode().Perm()); err != nil {
		return err
	}
	synced := time.Now()
	if durable {
		if err := out.Sync(); err != nil {
			return err
		}
	}
	if ph != nil {
		ph.copy, ph.sync = synced.Sub(start), time.Since(synced)
	}
	if err := out.Close(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := rename(tmp, dst, force); err != nil {
		return err
	}
	if durable {
		if err := syncDir(filepath.Dir(dst)); err != nil {
			return fmt.Errorf("%s is copied, but may not survive a crash: %w", dst, err)
		}
	}
	return nil
}

func checkRegular(name string, fi fs.FileInfo) error {
	switch {
	case fi.IsDir():
		return &fs.PathError{Op: "copy", Path: name, Err: errIsDir}
	case !fi.Mode().IsRegular():
		return &fs.PathError{Op: "copy", Path: name, Err: errNotFile}
	}
	return nil
}

// copyData copies size bytes of in to out (already size bytes long), a
// window at a time, skipping the holes of in; flush flushes each window.
func copyData(ctx context.Context, in, out *os.File, size int64, flush bool) error {
	g := int64(shm.Granularity())
	w := max(window/g, 1) * g
	for off := int64(0); off < size; {
		start, end, err := nextData(in, off, size)
		if err != nil {
			return err
		}
		if start >= end {
			break // only holes are left
		}
		// A window starts on a multiple of g: at worst the end of the
		// last window is copied again.
		for off = start - start%g; off < end; off += w {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := copyWindow(in, out, off, int(min(w, end-off)), flush); err != nil {
				return err
			}
		}
		off = end
	}
	return nil
}

// copyWindow copies n bytes at off from in to out through mappings.
func copyWindow(in, out *os.File, off int64, n int, flush bool) error {
	s, err := shm.MapFile(in, off, n, false)
	if err != nil {
		return err
	}
	defer s.Close()
	d, err := shm.MapFile(out, off, n, true)
	if err != nil {
		return err
	}
	defer d.Close()
	if f := copyMapped(d.Bytes(), s.Bytes()); f != nil {
		if f.src {
			return fmt.Errorf("reading %s at offset %d: memory fault (did it shrink during the copy?)", in.Name(), off+int64(f.off))
		}
		return fmt.Errorf("writing %s at offset %d: memory fault (is the disk full?)", out.Name(), off+int64(f.off))
	}
	if flush {
		if err := d.Flush(); err != nil {
			return err
		}
	}
	return d.Close()
}

// A fault is a memory fault at offset off of the source (src) or of the
// destination of a copy.
type fault struct {
	off int
	src bool
}

// copyMapped copies src to dst, of the same length, in pieces spread over
// goroutines. A memory fault (SIGBUS on Unix, an in-page error on Windows)
// is returned, not a crash: the one of the first piece that faulted.
func copyMapped(dst, src []byte) *fault {
	n := len(src)
	workers := min(runtime.GOMAXPROCS(0), maxWorkers, n/minPiece)
	if workers <= 1 {
		return copyPiece(dst, src)
	}
	piece := (n/workers + 1<<16 - 1) &^ (1<<16 - 1) // whole 64 KiB blocks
	faults := make([]*fault, workers)
	var wg sync.WaitGroup
	for i := range workers {
		lo, hi := min(i*piece, n), min((i+1)*piece, n)
		wg.Go(func() {
			if f := copyPiece(dst[lo:hi], src[lo:hi]); f != nil {
				f.off += lo
				faults[i] = f
			}
		})
	}
	wg.Wait()
	for _, f := range faults {
		if f != nil {
			return f
		}
	}
	return nil
}

func copyPiece(dst, src []byte) (f *fault) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			e, ok := r.(interface{ Addr() uintptr })
			if !ok {
				panic(r)
			}
			f = locate(e.Addr(), dst, src)
		}
	}()
	copy(dst, src)
	return nil
}

// locate tells where in src or dst the faulting address addr lies.
func locate(addr uintptr, dst, src []byte) *fault {
	if s := uintptr(unsafe.Pointer(unsafe.SliceData(src))); addr-s < uintptr(len(src)) {
		return &fault{off: int(addr - s), src: true}
	}
	d := uintptr(unsafe.Pointer(unsafe.SliceData(dst)))
	if addr-d < uintptr(len(dst)) {
		return &fault{off: int(addr - d)}
	}
	return &fault{src: true} // not in either: blame the source, at the start
}
