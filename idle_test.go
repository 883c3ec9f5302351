package instance

import (
	"errors"
	"testing"
	"time"

	"github.com/go-instance/instance/internal/proctest"
)

// TestIdlePrimarySleeps: an idle primary makes no polling loop (DESIGN:
// the primary uses no CPU while idle): once its start has settled, its
// threads do not run for a second.
func TestIdlePrimarySleeps(t *testing.T) {
	forEachBell(t, func(t *testing.T, bell uint32) {
		t.Parallel()
		p := startChild(t, childOpts{dir: testDir(t), bell: bell, serve: "quiet", args: []string{"primary"}})
		if l := p.next(20 * time.Second); l != "PRIMARY" {
			t.Fatalf("%q, want PRIMARY", l)
		}
		n, err := proctest.RunsWhileIdle(p.cmd.Process.Pid, 200*time.Millisecond, time.Second, 20*time.Second)
		if errors.Is(err, proctest.ErrUncounted) {
			t.Skip(err) // Windows: the bench reads the idle primary's CPU time instead
		}
		if err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("the idle primary's threads ran %d times in a second", n)
		}
	})
}
