package instance

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

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

// BenchmarkHandoff: one secondary forwards 200 bytes of arguments and waits
// for the reply; the primary runs in another process.
func BenchmarkHandoff(b *testing.B) {
	for _, bell := range bells() {
		b.Run(bellName(bell), func(b *testing.B) {
			dir := benchPrimary(b, bell)
			b.ResetTimer()
			for b.Loop() {
				inst, err := Acquire(testAppID, WithDir(dir), WithArgs(benchArgs))
				if err != nil || inst.IsPrimary() {
					b.Fatal(err)
				}
				inst.Release()
			}
		})
	}
}

// BenchmarkHandoffParallel: many senders at once, against one primary.
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

// BenchmarkLaunchSecondary: a whole secondary process, from start to exit
// with the reply, against BenchmarkLaunchHello, the same binary started
// to exit at once.
func BenchmarkLaunchSecondary(b *testing.B) {
	dir := benchPrimary(b, defaultBell)
	b.ResetTimer()
	for b.Loop() {
		c := startChild(b, childOpts{dir: dir, args: benchArgs})
		if l := c.next(20 * time.Second); !strings.HasPrefix(l, "SECONDARY ") {
			b.Fatalf("%q, want SECONDARY", l)
		}
		c.cmd.Wait()
	}
}

func BenchmarkLaunchHello(b *testing.B) {
	for b.Loop() {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), envRole+"=hello")
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
	}
}
