package instance

import (
	"strings"
	"testing"
	"time"
)

// benchArgs is 200 bytes of arguments, as a launch with a few paths sends.
var benchArgs = []string{strings.Repeat("a", 60), strings.Repeat("b", 60), strings.Repeat("c", 68)}

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
			}
		})
	}
}
