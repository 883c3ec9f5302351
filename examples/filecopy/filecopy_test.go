package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-instance/instance/shm"
)

// With mainEnv set the test binary is the command: where no go build is at
// hand (under Wine), the command tests run it instead of a built one.
const mainEnv = "FILECOPY_TEST_MAIN"

// shared holds what several tests share: the 1 GiB file, the built
// command. TestMain removes it.
var shared struct {
	sync.Mutex
	dir, big, exe string
}

// sharedDir returns shared.dir, made if need be; shared is locked.
func sharedDir(t testing.TB) string {
	t.Helper()
	if shared.dir == "" {
		dir, err := os.MkdirTemp("", "filecopy-test-")
		if err != nil {
			t.Fatal(err)
		}
		shared.dir = dir
	}
	return shared.dir
}

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) != "" {
		main()
	}
	code := m.Run()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// patternPeriod is the period of the test files' content: a prime, so that
// a window or page copied to the wrong place shows.
const patternPeriod = 1<<20 - 3

var pattern = sync.OnceValue(func() []byte {
	b := make([]byte, patternPeriod)
	r := rand.NewChaCha8([32]byte{'f', 'i', 'l', 'e', 'c', 'o', 'p', 'y'})
	r.Read(b)
	return b
})

// writePattern writes size bytes of the pattern to a new file at path.
func writePattern(t testing.TB, path string, size int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	p := pattern()
	for left := size; left > 0; {
		n, err := f.Write(p[:min(int64(len(p)), left)])
		if err != nil {
			f.Close()
			t.Fatal(err)
		}
		left -= int64(n)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// bigFile returns the path of a 1 GiB file of the pattern, made once.
func bigFile(t testing.TB) string {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	if shared.big == "" {
		start := time.Now()
		path := filepath.Join(sharedDir(t), "big")
		writePattern(t, path, 1<<30)
		t.Logf("wrote the 1 GiB source in %v", time.Since(start).Round(time.Millisecond))
		shared.big = path
	}
	return shared.big
}

// sameFiles fails t unless the files at a and b have the same size and
// bytes, compared a window at a time through read-only mappings: read
// into Go memory, the bytes would cost the race detector some 4 s a GiB.
func sameFiles(t *testing.T, a, b string) {
	t.Helper()
	fa, fb := open(t, a), open(t, b)
	sa, sb := size(t, fa), size(t, fb)
	if sa != sb {
		t.Fatalf("%s is %d bytes, %s %d", a, sa, b, sb)
	}
	for off := int64(0); off < sa; off += window {
		n := int(min(window, sa-off))
		ra, err := shm.MapFile(fa, off, n, false)
		if err != nil {
			t.Fatal(err)
		}
		rb, err := shm.MapFile(fb, off, n, false)
		if err != nil {
			ra.Close()
			t.Fatal(err)
		}
		equal := bytes.Equal(ra.Bytes(), rb.Bytes())
		i := 0
		for !equal && ra.Bytes()[i] == rb.Bytes()[i] {
			i++
		}
		ra.Close()
		rb.Close()
		if !equal {
			t.Fatalf("%s and %s differ at offset %d", a, b, off+int64(i))
		}
	}
}

func open(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func stat(t *testing.T, path string) fs.FileInfo {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

func size(t *testing.T, f *os.File) int64 {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// allocated describes the disk space the file at path takes, where the
// system tells (the Blocks of a Unix stat).
func allocated(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return err.Error()
	}
	v := reflect.ValueOf(fi.Sys())
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return "allocated size unknown"
	}
	if blocks := v.Elem().FieldByName("Blocks"); blocks.CanInt() {
		return fmt.Sprintf("%d KiB allocated", blocks.Int()/2)
	}
	return "allocated size unknown"
}

// tempLeft fails t if a temporary file of filecopy is in dir.
func tempLeft(t *testing.T, dir string) {
	t.Helper()
	left, err := filepath.Glob(filepath.Join(dir, tempPattern))
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("temporary files left: %q", left)
	}
}

func TestCopySizes(t *testing.T) {
	for _, size := range []int64{0, 1, 4095, 4096, 65537, window + 1, 3*window - 12345} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
			writePattern(t, src, size)
			if err := copyFile(context.Background(), src, dst, false, false, nil); err != nil {
				t.Fatal(err)
			}
			sameFiles(t, src, dst)
			tempLeft(t, dir)
		})
	}
}

func TestCopy1GiB(t *testing.T) {
	if testing.Short() {
		t.Skip("a 1 GiB copy; not with -short")
	}
	src := bigFile(t)
	dir := t.TempDir()
	dst := filepath.Join(dir, "dst")
	var ph phases
	if err := copyFile(context.Background(), src, dst, false, true, &ph); err != nil { // -sync
		t.Fatal(err)
	}
	start := time.Now()
	sameFiles(t, src, dst)
	t.Logf("copied 1 GiB in %v (copy %v, fsync %v); compared in %v",
		(ph.copy + ph.sync).Round(time.Millisecond), ph.copy.Round(time.Millisecond),
		ph.sync.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	tempLeft(t, dir)
}

// TestCopy4GiBPlus1 copies a sparse file of 4 GiB + 1 byte, with data
// at offsets that 32-bit arithmetic would get wrong and data running
// through window boundaries, up to the very last byte.
func TestCopy4GiBPlus1(t *testing.T) {
	if testing.Short() {
		t.Skip("a 4 GiB copy; not with -short")
	}
	const size = 4<<30 + 1
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		t.Fatal(err)
	}
	points := []int64{0, 1, 4095, 4096, window - 1, window, 1<<31 + 100000, 1<<32 - 1, 1 << 32}
	for i, off := range points {
		if _, err := f.WriteAt([]byte{byte(i + 1)}, off); err != nil {
			f.Close()
			t.Fatal(err)
		}
	}
	// Runs of the pattern across window boundaries (one at 2 GiB) and just
	// below 4 GiB.
	runs := []int64{3*window - 70000, 1<<31 - 45000, 1<<32 - 100000}
	for _, off := range runs {
		if _, err := f.WriteAt(pattern()[:90000], off); err != nil {
			f.Close()
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	if err := copyFile(context.Background(), src, dst, false, false, nil); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	fi, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != size {
		t.Fatalf("copy is %d bytes, want %d", fi.Size(), int64(size))
	}
	d, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for i, off := range points {
		b := []byte{0}
		if _, err := d.ReadAt(b, off); err != nil {
			t.Fatalf("reading the copy at %d: %v", off, err)
		}
		if b[0] != byte(i+1) {
			t.Errorf("copy has %d at offset %d, want %d", b[0], off, i+1)
		}
	}
	for _, off := range runs {
		b := make([]byte, 90000)
		if _, err := d.ReadAt(b, off); err != nil {
			t.Fatalf("reading the copy at %d: %v", off, err)
		}
		if !bytes.Equal(b, pattern()[:90000]) {
			t.Errorf("copy differs in the run at offset %d", off)
		}
	}
	// Then 1 MiB either side of every point and run, and 1 MiB in the
	// middle of a hole, byte for byte. (Streaming all of both files reads
	// 8 GiB, mostly holes the kernel zeroes page by page: some 15 s.)
	start = time.Now()
	for _, off := range append(append(points, runs...), 3<<30) {
		sameRange(t, src, dst, max(off-1<<20, 0), min(off+1<<20, size))
	}
	t.Logf("copied 4 GiB + 1 in %v; compared around the data in %v; %s", took.Round(time.Millisecond),
		time.Since(start).Round(time.Millisecond), allocated(dst))
}

// sameRange fails t unless the files at a and b have the same bytes in
// [from, to).
func sameRange(t *testing.T, a, b string, from, to int64) {
	t.Helper()
	ba, bb := make([]byte, to-from), make([]byte, to-from)
	for _, r := range []struct {
		path string
		buf  []byte
	}{{a, ba}, {b, bb}} {
		f, err := os.Open(r.path)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.ReadAt(r.buf, from)
		f.Close()
		if err != nil {
			t.Fatalf("reading %s at %d: %v", r.path, from, err)
		}
	}
	if !bytes.Equal(ba, bb) {
		i := 0
		for ba[i] == bb[i] {
			i++
		}
		t.Errorf("%s and %s differ at offset %d", a, b, from+int64(i))
	}
}

func TestExisting(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	writePattern(t, src, 100000)
	if err := os.WriteFile(dst, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := copyFile(context.Background(), src, dst, false, false, nil)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("copy over an existing file: %v, want an error matching fs.ErrExist", err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "old" {
		t.Fatalf("refused copy changed the destination to %d bytes", len(b))
	}
	if err := copyFile(context.Background(), src, dst, true, false, nil); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, src, dst)
	tempLeft(t, dir)
}

// TestNoReplace checks the last step alone: without force, a destination
// that appeared after the check is not replaced.
func TestNoReplace(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tmp, dst := filepath.Join(dir, "tmp"), filepath.Join(dir, "dst")
	os.WriteFile(tmp, []byte("new"), 0o644)
	os.WriteFile(dst, []byte("old"), 0o644)
	if err := rename(tmp, dst, false); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("rename without force over an existing file: %v, want an error matching fs.ErrExist", err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "old" {
		t.Fatalf("destination is %q, want %q", b, "old")
	}
	if err := rename(tmp, dst, true); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "new" {
		t.Fatalf("destination is %q, want %q", b, "new")
	}
	if _, err := os.Stat(tmp); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("source of the rename is still there: %v", err)
	}
}

func TestPermissions(t *testing.T) {
	t.Parallel()
	perms := []fs.FileMode{0o751, 0o600, 0o444}
	if runtime.GOOS == "windows" {
		perms = []fs.FileMode{0o666, 0o444} // only the read-only attribute
	}
	for _, perm := range perms {
		dir := t.TempDir()
		src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
		writePattern(t, src, 10)
		if err := os.Chmod(src, perm); err != nil {
			t.Fatal(err)
		}
		if err := copyFile(context.Background(), src, dst, false, false, nil); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(dst)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != perm {
			t.Errorf("copy of a file with mode %v has mode %v", perm, fi.Mode().Perm())
		}
		// Replacing a read-only destination works on Unix; Windows refuses.
		if runtime.GOOS != "windows" {
			if err := copyFile(context.Background(), src, dst, true, false, nil); err != nil {
				t.Errorf("replacing the copy of mode %v: %v", perm, err)
			}
		}
		tempLeft(t, dir)
	}
}

func TestRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	writePattern(t, src, 5000)
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	type refusal struct {
		name, src, dst string
		want           error
	}
	refusals := []refusal{
		{"same name", src, src, errSameFile},
		{"same file, another name", src, filepath.Join(dir, ".", "src"), errSameFile},
		{"source is a directory", sub, filepath.Join(dir, "x"), errIsDir},
		{"destination is a directory", src, sub, errIsDir},
		{"destination is a device", src, os.DevNull, errNotFile},
		{"missing source", filepath.Join(dir, "missing"), filepath.Join(dir, "x"), fs.ErrNotExist},
		{"missing destination directory", src, filepath.Join(dir, "missing", "x"), fs.ErrNotExist},
	}
	if err := os.Link(src, filepath.Join(dir, "hardlink")); err == nil {
		refusals = append(refusals, refusal{"hard link", src, filepath.Join(dir, "hardlink"), errSameFile})
	} else {
		t.Logf("no hard link test: %v", err)
	}
	// Wine makes symbolic links that os.Stat does not follow; Windows
	// makes them only with a privilege.
	link := filepath.Join(dir, "symlink")
	if err := os.Symlink("src", link); err != nil {
		t.Logf("no symbolic link test: %v", err)
	} else if fi, err := os.Stat(link); err != nil || !os.SameFile(fi, stat(t, src)) {
		t.Logf("no symbolic link test: os.Stat does not follow the link: %v", err)
	} else {
		refusals = append(refusals, refusal{"symbolic link", src, link, errSameFile})
	}
	for _, r := range refusals {
		for _, force := range []bool{false, true} {
			err := copyFile(context.Background(), r.src, r.dst, force, false, nil)
			if !errors.Is(err, r.want) {
				t.Errorf("%s (force %v): %v, want an error matching %q", r.name, force, err, r.want)
			}
		}
	}
	if b, err := os.ReadFile(src); err != nil || len(b) != 5000 {
		t.Errorf("source is now %d bytes, %v", len(b), err)
	}
	tempLeft(t, dir)
	tempLeft(t, sub)
}

// TestCanceled checks that a copy stopped after its temporary file was
// made (as by SIGINT) removes it and leaves the destination as it was.
func TestCanceled(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	writePattern(t, src, 3*window)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, size := range []int64{3 * window, 0} { // stops in the loop, before the rename
		if err := os.Truncate(src, size); err != nil {
			t.Fatal(err)
		}
		if err := copyFile(ctx, src, dst, false, false, nil); !errors.Is(err, context.Canceled) {
			t.Fatalf("canceled copy of %d bytes: %v", size, err)
		}
		if _, err := os.Stat(dst); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("canceled copy made the destination: %v", err)
		}
		tempLeft(t, dir)
	}
}

// command returns the command filecopy with args: built into a temporary
// directory if go is at hand, else the test binary as the command.
func command(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	exe := built(t)
	cmd := exec.Command(exe, args...)
	if exe == os.Args[0] {
		cmd.Env = append(os.Environ(), mainEnv+"=1")
	}
	return cmd
}

// built returns the command: built once if go is at hand, else the test
// binary.
func built(t *testing.T) string {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	if shared.exe != "" {
		return shared.exe
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Logf("no go command (%v): running the test binary as filecopy", err)
		shared.exe = os.Args[0]
		return shared.exe
	}
	exe := filepath.Join(sharedDir(t), "filecopy"+exeSuffix())
	out, err := exec.Command(goTool, "build", "-o", exe, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	shared.exe = exe
	return exe
}

func exeSuffix() string {
	if runtime.GOOS == "windows" {
		return ".exe"
	}
	return ""
}

func TestCommand(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	writePattern(t, src, 300000)
	cases := []struct {
		args   []string
		code   int
		stderr string
	}{
		{nil, 2, "usage: filecopy [-f] [-sync] SRC DST"},
		{[]string{src}, 2, "usage:"},
		{[]string{src, dst, "extra"}, 2, "usage:"},
		{[]string{"-x", src, dst}, 2, "usage:"},
		{[]string{"-h"}, 0, "usage:"},
		{[]string{filepath.Join(dir, "missing"), dst}, 1, "missing: "},
		{[]string{dir, dst}, 1, "is a directory"},
		{[]string{src, src}, 1, "same file"},
		{[]string{src, dst}, 0, ""},
		{[]string{src, dst}, 1, "-f replaces it"},
		{[]string{"-f", src, dst}, 0, ""},
	}
	for _, c := range cases {
		var stderr bytes.Buffer
		cmd := command(t, c.args...)
		cmd.Stderr = &stderr
		err := cmd.Run()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		got := stderr.String()
		if code != c.code || !strings.Contains(got, c.stderr) || (c.stderr == "") != (got == "") ||
			strings.Contains(got, "panic") || strings.Contains(got, "goroutine") {
			t.Errorf("filecopy %q: exit status %d, stderr %q; want %d and %q", c.args, code, got, c.code, c.stderr)
		}
	}
	sameFiles(t, src, dst)
	tempLeft(t, dir)
}

// BenchmarkVsCp copies the 1 GiB file with cp and with copyFile, in turn,
// and reports the median times and their ratios (one iteration copies
// four times; use -benchtime 5x or bench.sh):
//
//   - cp-ms: cp alone; its data is on disk only later.
//   - cp+fsync-ms: cp, then an fsync of the copy.
//   - filecopy-ms: copyFile as the command runs by default (like cp).
//   - filecopy-sync-ms: copyFile with -sync (an fsync before the rename).
//   - filecopy_vs_cp_ratio: filecopy-ms / cp-ms, the two commands as they
//     run; filecopy_sync_vs_cp_fsync_ratio: filecopy-sync-ms /
//     cp+fsync-ms, at the same durability.
func BenchmarkVsCp(b *testing.B) {
	cp, err := exec.LookPath("cp")
	if err != nil {
		b.Skip("no cp:", err)
	}
	src := bigFile(b)
	dir := b.TempDir()
	dst := filepath.Join(dir, "dst")
	var tcp, tcpSync, tfc, tfcSync []time.Duration
	// Each copy starts without the last one's file (removing it drops its
	// dirty pages) and after a pause for the file system.
	fresh := func() {
		if err := os.Remove(dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
			b.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	runCp := func(sync bool) time.Duration {
		fresh()
		start := time.Now()
		if out, err := exec.Command(cp, src, dst).CombinedOutput(); err != nil {
			b.Fatalf("cp: %v: %s", err, out)
		}
		if sync {
			f, err := os.OpenFile(dst, os.O_RDWR, 0)
			if err != nil {
				b.Fatal(err)
			}
			err = f.Sync()
			f.Close()
			if err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start)
	}
	for b.Loop() {
		tcp = append(tcp, runCp(false))
		tcpSync = append(tcpSync, runCp(true))
		for _, durable := range []bool{false, true} {
			fresh()
			start := time.Now()
			if err := copyFile(context.Background(), src, dst, false, durable, nil); err != nil {
				b.Fatal(err)
			}
			if durable {
				tfcSync = append(tfcSync, time.Since(start))
			} else {
				tfc = append(tfc, time.Since(start))
			}
		}
	}
	fresh()
	ms := func(ds []time.Duration) float64 {
		ds = slices.Clone(ds)
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return float64(ds[len(ds)/2]) / 1e6 // the upper median
	}
	mcp, mcpSync, mfc, mfcSync := ms(tcp), ms(tcpSync), ms(tfc), ms(tfcSync)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(mcp, "cp-ms")
	b.ReportMetric(mcpSync, "cp+fsync-ms")
	b.ReportMetric(mfc, "filecopy-ms")
	b.ReportMetric(mfcSync, "filecopy-sync-ms")
	b.Logf("%d runs each; medians: cp %.0f ms, cp+fsync %.0f ms, filecopy %.0f ms, filecopy -sync %.0f ms",
		len(tcp), mcp, mcpSync, mfc, mfcSync)
	b.Logf("cp: %v\ncp+fsync: %v\nfilecopy: %v\nfilecopy -sync: %v", tcp, tcpSync, tfc, tfcSync)
	b.Logf("filecopy_vs_cp_ratio: %.2f", mfc/mcp)
	b.Logf("filecopy_sync_vs_cp_fsync_ratio: %.2f", mfcSync/mcpSync)
}
