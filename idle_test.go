package instance

import (
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
		proctest.CheckSleeps(t, p.cmd.Process.Pid, "the idle primary")
	})
}
