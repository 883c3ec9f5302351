//go:build windows

package instance

import (
	"os"
	"testing"
	"time"
)

// The lock file cannot be deleted while the primary holds it open (it is
// not shared for deletion); a later launch is its secondary.
func TestLockFileNotRemovable(t *testing.T) {
	dir := testDir(t)
	f := filesFor(t, dir)
	p := startChild(t, childOpts{dir: dir, serve: "quiet", args: []string{"primary"}})
	if l := p.next(60 * time.Second); l != "PRIMARY" {
		t.Fatalf("%q, want PRIMARY", l)
	}
	if err := os.Remove(f.lockPath); err == nil {
		t.Errorf("deleted %s under the primary", f.lockPath)
	}
	s := startChild(t, childOpts{dir: dir, args: []string{"after"}})
	checkSecondary(t, s, s.next(60*time.Second))
}
