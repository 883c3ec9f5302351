// Package proctest tells the tests of this module whether a process of
// theirs runs while it should sleep: DESIGN's "the primary uses no CPU
// while idle". It counts the times the kernel ran the process's threads,
// not time: a wake-up costs what the machine makes it cost, and tests
// assert no times.
package proctest

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// ErrUncounted: the system does not tell this package how often a
// process's threads ran.
var ErrUncounted = errors.New("proctest: cannot count a process's runs here")

// CheckSleeps fails t if the threads of process pid, what the message
// calls it, run in a second once they have not run for a fifth of one (a
// start settles: Go's runtime monitor backs off), or if that does not
// come within 20 s. It skips t where the system does not tell (Windows:
// the bench reads an idle primary's CPU time there instead).
func CheckSleeps(t testing.TB, pid int, what string) {
	t.Helper()
	n, err := runsWhileIdle(pid, 200*time.Millisecond, time.Second, 20*time.Second)
	if errors.Is(err, ErrUncounted) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if n != 0 {
		t.Errorf("%s: its threads ran %d times in a second", what, n)
	}
}

// CheckWakes fails t unless the threads of process pid, once they have
// not run for a fifth of a second (as for CheckSleeps), run within 10 s
// of poke: a wake-up that must come. It skips t where the system does not
// tell.
func CheckWakes(t testing.TB, pid int, what string, poke func()) {
	t.Helper()
	before, err := settled(pid, 200*time.Millisecond, 20*time.Second)
	if errors.Is(err, ErrUncounted) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	poke()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		now, err := runs(pid)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if now != before {
			return
		}
	}
	t.Errorf("%s: its threads did not run in 10 s", what)
}

// runsWhileIdle waits until the threads of process pid have not run for
// settle, for at most limit, and then returns how many times they ran in
// the next window.
func runsWhileIdle(pid int, settle, window, limit time.Duration) (int64, error) {
	before, err := settled(pid, settle, limit)
	if err != nil {
		return 0, err
	}
	time.Sleep(window)
	now, err := runs(pid)
	return now - before, err
}

// settled waits until the threads of process pid have not run for
// settle, for at most limit, and returns how many times they have run.
func settled(pid int, settle, limit time.Duration) (int64, error) {
	deadline := time.Now().Add(limit)
	before, err := runs(pid)
	if err != nil {
		return 0, err
	}
	for {
		time.Sleep(settle)
		now, err := runs(pid)
		if err != nil {
			return 0, err
		}
		if now == before {
			return now, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("process %d never slept for %v in %v", pid, settle, limit)
		}
		before = now
	}
}
