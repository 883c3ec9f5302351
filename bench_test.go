package instance

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-instance/instance/internal/baseline"
)

// The benchmarks report, besides ns/op, the baseline's time measured by
// turns with what they measure, and the ratio of the two: the machine's
// speed drifts by more than the difference measured, so only figures of
// the same run compare.

// benchArgs is 200 bytes of arguments, as a launch with a few paths sends.
var benchArgs = []string{strings.Repeat("a", 66), strings.Repeat("b", 66), strings.Repeat("c", 68)}

// benchPrimary starts a primary in another process and waits until it
// serves.
func benchPrimary(b *testing.B, bell uint32) string {
	b.Helper()
	dir := testDir(b)
	p := startChild(b, childOpts{dir: dir, bell: bell, serve: "quiet", args: []string{"primary"}})
	if l := p.next(20 * time.Second); l != "PRIMARY" {
		b.Fatalf("%q, want PRIMARY", l)
	}
	return dir
}

// benchBaseline starts the baseline's server (package baseline) in
// another process and returns its directory.
func benchBaseline(b *testing.B) string {
	b.Helper()
	dir := testDir(b)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envRole+"=baseline", envDir+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close() // it serves until its input ends
		cmd.Wait()
	})
	var ready [6]byte
	if n, err := out.Read(ready[:]); err != nil || string(ready[:n]) != "READY\n" {
		b.Fatalf("the baseline's server did not start: %q %v", ready[:n], err)
	}
	return dir
}

// serveBaseline is the role of benchBaseline's process.
func serveBaseline() int {
	ln, err := baseline.Listen(os.Getenv(envDir))
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 1
	}
	os.Stdout.WriteString("READY\n")
	go func() {
		var b [1]byte
		os.Stdin.Read(b[:])
		ln.Close()
	}()
	baseline.Serve(ln)
	return 0
}

// pair times a and then baseline, by turns, b.N times, and reports a's
// mean as ns/op, the baseline's as name-ns/op, and the ratio of the two
// as vs-name. after, if a returns one, runs once the clock has stopped.
func pair(b *testing.B, name string, a func() (after func(), err error), base func() error) {
	var ta, tb time.Duration
	for b.Loop() {
		t := time.Now()
		after, err := a()
		ta += time.Since(t)
		if err != nil {
			b.Fatal(err)
		}
		if after != nil {
			after()
		}
		t = time.Now()
		err = base()
		tb += time.Since(t)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(ta)/float64(b.N), "ns/op")
	b.ReportMetric(float64(tb)/float64(b.N), name+"-ns/op")
	b.ReportMetric(float64(ta)/float64(tb), "vs-"+name)
}

// BenchmarkHandoff: one secondary forwards 200 bytes of arguments and waits
// for the reply, the primary in another process; against the baseline's
// exchange (package baseline). A secondary's Release, which unmaps the
// region (a launch that exits leaves that to the kernel), is not timed.
func BenchmarkHandoff(b *testing.B) {
	for _, bell := range bells() {
		b.Run(bellName(bell), func(b *testing.B) {
			dir := benchPrimary(b, bell)
			base := benchBaseline(b)
			pair(b, "baseline", func() (func(), error) {
				inst, err := Acquire(testAppID, WithDir(dir), WithArgs(benchArgs))
				if err == nil && inst.IsPrimary() {
					err = errors.New("became the primary")
				}
				if err != nil {
					return nil, err
				}
				return func() { inst.Release() }, nil
			}, func() error { return baseline.Exchange(base) })
		})
	}
}

// BenchmarkHandoffParallel: many senders at once, goroutines of this
// process, against one primary; Acquire and Release.
func BenchmarkHandoffParallel(b *testing.B) {
	dir := benchPrimary(b, defaultBell)
	b.SetParallelism(8) // 8 x GOMAXPROCS senders
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			inst, err := Acquire(testAppID, WithDir(dir), WithArgs(benchArgs))
			if err != nil || inst.IsPrimary() {
				b.Error(err)
				return
			}
			inst.Release()
		}
	})
}

// BenchmarkLaunch: a whole secondary process, from start to exit with the
// reply, against the same binary started to exit at once ("hello"), by
// turns, each started the same way.
func BenchmarkLaunch(b *testing.B) {
	dir := benchPrimary(b, defaultBell)
	args := filepath.Join(b.TempDir(), "args")
	if err := os.WriteFile(args, encodeArgs(benchArgs), 0o600); err != nil {
		b.Fatal(err)
	}
	run := func(env ...string) ([]byte, error) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(append(os.Environ(), noExitSleep()), env...)
		return cmd.Output()
	}
	pair(b, "hello", func() (func(), error) {
		out, err := run(envRole+"=launch", envDir+"="+dir, envArgs+"="+args)
		if err == nil && !strings.HasPrefix(string(out), "SECONDARY ") {
			b.Fatalf("%q, want SECONDARY", out)
		}
		return nil, err
	}, func() error {
		_, err := run(envRole + "=hello")
		return err
	})
}
