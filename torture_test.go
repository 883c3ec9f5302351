package instance

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The torture suite: storms, kills, hostile input, handover, with real
// processes throughout. It runs its short counts by default, in every
// `go test`; INSTANCE_TORTURE=long runs the long ones. Each scenario ends
// with one summary line, logged and, if INSTANCE_TORTURE_SUMMARY names a
// file, appended to it (go test prints nothing of a passing package).
const (
	envTorture        = "INSTANCE_TORTURE"
	envTortureSummary = "INSTANCE_TORTURE_SUMMARY"
)

// count is short or, in the long mode, long. go test -short takes a tenth;
// the race detector a fifth (the scenarios are mostly process starts, and
// a -race test binary takes four to five times as long to start and exit:
// CI runs them at full count without it as well); Windows (run under Wine,
// where a process start costs tens of milliseconds) a twentieth.
func count(short, long int) int {
	n := short
	if os.Getenv(envTorture) == "long" {
		n = long
	}
	if testing.Short() {
		n /= 10
	}
	if raceEnabled {
		n /= 5
	}
	if runtime.GOOS == "windows" {
		n /= 20
	}
	return max(n, 1)
}

func summary(t *testing.T, format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	if runtime.GOOS != "linux" {
		line = runtime.GOOS + " " + line
	}
	t.Log(line)
	if path := os.Getenv(envTortureSummary); path != "" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		fmt.Fprintln(f, line)
	}
}

// event is a line of one of several children, as it arrived.
type event struct {
	c    *child
	line string // "EOF" once the child has exited
	at   time.Time
}

// watch sends c's lines, then its exit, to events. c.next must not be used
// after.
func watch(c *child, events chan<- event) {
	go func() {
		for l := range c.lines {
			events <- event{c, l, time.Now()}
		}
		c.cmd.Wait()
		events <- event{c, "EOF", time.Now()}
	}()
}

// 1. Storm: many launches at once, round after round. Each round has
// exactly one primary, and it receives each secondary's message once; each
// secondary gets its own reply.
func TestTortureStorm(t *testing.T) {
	rounds, procs := count(200, 2000), 64
	if runtime.GOOS == "windows" {
		procs = 16
	}
	var launches, primaries, delivered, lost, duplicated int
	dirs := map[uint32]string{}
	for round := range rounds {
		bell := bells()[round%len(bells())]
		if dirs[bell] == "" {
			dirs[bell] = testDir(t)
		}
		opts := make([]childOpts, procs)
		for i := range opts {
			args := []string{fmt.Sprintf("round-%d", round), fmt.Sprintf("child-%d", i), "\xff\xfe", ""}
			opts[i] = childOpts{dir: dirs[bell], bell: bell, args: args}
		}
		kids := startAll(t, opts)
		for _, c := range kids {
			c.stdin.Write([]byte{1})
		}
		launches += procs
		var primary *child
		var secondaries []*child
		for _, c := range kids {
			switch l := c.next(60 * time.Second); {
			case l == "PRIMARY":
				primaries++
				if primary != nil {
					t.Fatalf("round %d: two primaries: %d and %d", round, primary.cmd.Process.Pid, c.cmd.Process.Pid)
				}
				primary = c
			case strings.HasPrefix(l, "SECONDARY "):
				checkSecondary(t, c, l)
				secondaries = append(secondaries, c)
			default:
				t.Fatalf("round %d: child %d: %q", round, c.cmd.Process.Pid, l)
			}
		}
		if primary == nil {
			t.Fatalf("round %d: no primary", round)
		}
		got := map[string]int{}
		for _, l := range primary.stop(30 * time.Second) {
			if strings.HasPrefix(l, "MSG ") {
				args, _ := parseMsg(t, l)
				got[string(encodeArgs(args))]++
			}
		}
		for _, c := range secondaries {
			key := string(encodeArgs(c.args))
			switch n := got[key]; {
			case n == 0:
				lost++
			case n > 1:
				duplicated += n - 1
			}
			delivered += min(got[key], 1)
			delete(got, key)
		}
		if len(got) != 0 {
			t.Errorf("round %d: %d messages from nobody", round, len(got))
		}
		for _, c := range kids {
			c.cmd.Wait()
		}
		if lost+duplicated > 0 {
			t.Errorf("round %d: %d lost, %d duplicated so far", round, lost, duplicated)
		}
	}
	summary(t, "storm: launches=%d primaries=%d delivered=%d lost=%d duplicated=%d", launches, primaries, delivered, lost, duplicated)
}

// 2. Chaos: launches arrive while the primary is killed at random moments.
// After each kill the next launch becomes primary; every launch ends
// answered or primary (an error is reported, and fails the test), none
// hangs, none exits silently.
func TestTortureChaos(t *testing.T) {
	kills := count(1000, 10000)
	const perRound, procs = 4, 8
	var launches, answered, primaries, errs, done int
	var takeovers []time.Duration
	var errors []string
	dirs := map[uint32]string{}
	for round := 0; done < kills; round++ {
		bell := bells()[round%len(bells())]
		if dirs[bell] == "" {
			dirs[bell] = testDir(t)
		}
		dir := dirs[bell]
		events := make(chan event, 4*procs)
		outcome := map[*child]string{}
		killed := map[*child]bool{}
		opt := func() childOpts {
			launches++
			return childOpts{dir: dir, bell: bell, args: []string{"chaos", strconv.Itoa(launches)}, timeout: 10 * time.Second, serve: "quiet"}
		}
		launch := func(c *child) {
			outcome[c] = ""
			watch(c, events)
			c.stdin.Write([]byte{1})
		}
		opts := make([]childOpts, procs)
		for i := range opts {
			opts[i] = opt()
		}
		for _, c := range startAll(t, opts) {
			launch(c)
		}
		left := min(perRound, kills-done)
		var survivor *child
		var killedAt time.Time
		exited := 0
		deadline := time.After(2 * time.Minute)
		for exited < len(outcome) {
			var ev event
			select {
			case ev = <-events:
			case <-deadline:
				for c, o := range outcome {
					if o == "" && !killed[c] {
						t.Errorf("round %d: child %d hangs", round, c.cmd.Process.Pid)
					}
				}
				t.FailNow()
			}
			c := ev.c
			switch l := ev.line; {
			case l == "PRIMARY":
				primaries++
				outcome[c] = l
				if !killedAt.IsZero() {
					takeovers = append(takeovers, ev.at.Sub(killedAt))
					killedAt = time.Time{}
				}
				if left == 0 {
					survivor = c
					c.stdin.Close() // serve what is queued, then release
					break
				}
				left--
				done++
				killed[c] = true
				time.Sleep(time.Duration(rand.N(3000)) * time.Microsecond)
				killedAt = time.Now()
				c.cmd.Process.Kill()
				launch(startAll(t, []childOpts{opt()})[0]) // so that there is a next launch to take over
			case strings.HasPrefix(l, "SECONDARY "):
				checkSecondary(t, c, l)
				answered++
				outcome[c] = l
			case strings.HasPrefix(l, "ERROR "):
				errs++
				outcome[c] = l
				if !strings.Contains(l, "instance: ") {
					t.Errorf("round %d: unclear error: %q", round, l)
				}
				errors = append(errors, l)
			case l == "EOF":
				exited++
				if outcome[c] == "" {
					t.Errorf("round %d: child %d exited silently", round, c.cmd.Process.Pid)
				}
				if !killed[c] && c.cmd.ProcessState != nil && !c.cmd.ProcessState.Success() {
					t.Errorf("round %d: child %d: %v", round, c.cmd.Process.Pid, c.cmd.ProcessState)
				}
			case strings.HasPrefix(l, "MSG "):
			default:
				t.Errorf("round %d: child %d: %q", round, c.cmd.Process.Pid, l)
			}
		}
		if survivor == nil {
			t.Fatalf("round %d: no primary after the kills", round)
		}
	}
	for _, e := range errors {
		t.Log(e)
	}
	// A launch lives through kills: its message goes again to the next
	// primary, or it becomes that primary, long before its timeout.
	if errs > 0 {
		t.Errorf("%d of %d launches ended with an error (above)", errs, launches)
	}
	slices.Sort(takeovers)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	summary(t, "chaos: kills=%d launches=%d answered=%d primaries=%d errors=%d hung=0 silent=0 median_takeover_ms=%.1f slowest_takeover_ms=%.1f",
		done, launches, answered, primaries, errs, ms(takeovers[len(takeovers)/2]), ms(takeovers[len(takeovers)-1]))
}

// 3. Secondaries killed at random points of sending: the primary keeps
// serving, and no partial or damaged message reaches its handler.
func TestTortureSecondaryKilled(t *testing.T) {
	kills := count(1000, 10000)
	dir := testDir(t)
	inst := acquirePrimary(t, dir, defaultBell)
	var delivered, damaged atomic.Int64
	seen := sync.Map{}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		inst.Serve(ctx, func(m *Message) Reply {
			// args: name, size of the payload, its first byte's seed
			ok := len(m.Args) == 2
			if ok {
				n, err := strconv.Atoi(m.Args[1])
				ok = err == nil && bytes.Equal(m.Data, payload(n))
			}
			if !ok {
				damaged.Add(1)
				t.Errorf("damaged message from %d: args %.40q, %d bytes", m.PID, m.Args, len(m.Data))
			} else {
				delivered.Add(1)
				seen.Store(m.Args[0], true)
			}
			return Reply{Code: 3, Data: replyFor(m.Args)}
		})
	}()
	defer func() { cancel(); <-served }()

	var started atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := started.Add(1); i <= int64(kills); i = started.Add(1) {
				// Up to 40 chunks of the region's 16 KiB slots.
				n := rand.N(640 << 10)
				c, err := spawnReady(t, childOpts{dir: dir, bell: defaultBell,
					args: []string{"victim-" + strconv.FormatInt(i, 10), strconv.Itoa(n)}, data: n})
				if err != nil {
					errs <- fmt.Errorf("victim %d: %w", i, err)
					return
				}
				c.stdin.Write([]byte{1})
				time.Sleep(time.Duration(rand.N(4000)) * time.Microsecond)
				c.kill()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Honest senders, all at once, are all answered: no slot was lost to
	// the killed ones.
	const honest = 16
	kids := make([]*child, honest)
	for i := range kids {
		kids[i] = startChild(t, childOpts{dir: dir, bell: defaultBell, args: []string{"honest-" + strconv.Itoa(i), "100"}, data: 100})
	}
	for _, c := range kids {
		checkSecondary(t, c, c.next(30*time.Second))
	}
	summary(t, "secondary_kills: kills=%d delivered_before_kill=%d lost_in_flight=%d damaged=%d honest_after=%d/%d",
		kills, delivered.Load()-honest, int64(kills)-(delivered.Load()-honest), damaged.Load(), honest, honest)
}

// 6. Handover under load: the primary releases while launches arrive. Each
// launch is answered or becomes the one new primary (an error fails the
// test); every answered message was delivered once.
func TestTortureHandover(t *testing.T) {
	rounds := count(50, 500)
	const procs = 24
	var launches, answered, errs int
	var byOld, byNew int
	for round := range rounds {
		bell := bells()[round%len(bells())]
		dir := testDir(t)
		old := startChild(t, childOpts{dir: dir, bell: bell, args: []string{"old"}})
		if l := old.next(20 * time.Second); l != "PRIMARY" {
			t.Fatalf("round %d: %q, want PRIMARY", round, l)
		}
		opts := make([]childOpts, procs)
		for i := range opts {
			opts[i] = childOpts{dir: dir, bell: bell, timeout: 10 * time.Second,
				args: []string{"handover", strconv.Itoa(round), strconv.Itoa(i)}}
		}
		kids := startAll(t, opts)
		launches += procs
		for _, c := range kids {
			c.stdin.Write([]byte{1})
		}
		time.Sleep(time.Duration(rand.N(5000)) * time.Microsecond)
		oldMsgs := old.stop(30 * time.Second) // Release, with launches arriving
		var primary *child
		var secondaries []*child
		for _, c := range kids {
			switch l := c.next(60 * time.Second); {
			case l == "PRIMARY":
				if primary != nil {
					t.Fatalf("round %d: two new primaries", round)
				}
				primary = c
			case strings.HasPrefix(l, "SECONDARY "):
				checkSecondary(t, c, l)
				secondaries = append(secondaries, c)
				answered++
			case strings.HasPrefix(l, "ERROR ") && strings.Contains(l, "instance: "):
				errs++
				t.Logf("round %d: %s", round, l)
			default:
				t.Fatalf("round %d: child %d: %q", round, c.cmd.Process.Pid, l)
			}
		}
		// The next launch: a secondary of the new primary, or the new
		// primary if none of the others became it.
		next := startChild(t, childOpts{dir: dir, bell: bell, args: []string{"next", strconv.Itoa(round)}})
		switch l := next.next(30 * time.Second); {
		case l == "PRIMARY" && primary == nil:
			primary = next
		case strings.HasPrefix(l, "SECONDARY ") && primary != nil:
			checkSecondary(t, next, l)
			secondaries = append(secondaries, next)
		default:
			t.Fatalf("round %d: next launch: %q (a new primary before: %v)", round, l, primary != nil)
		}
		newMsgs := primary.stop(30 * time.Second)
		for _, c := range append(kids, next, old) {
			c.cmd.Wait() // its pipes closed: the long mode starts thousands
		}
		got := map[string]int{}
		for _, l := range oldMsgs {
			if strings.HasPrefix(l, "MSG ") {
				a, _ := parseMsg(t, l)
				got[string(encodeArgs(a))]++
				byOld++
			}
		}
		for _, l := range newMsgs {
			if strings.HasPrefix(l, "MSG ") {
				a, _ := parseMsg(t, l)
				got[string(encodeArgs(a))]++
				byNew++
			}
		}
		for _, c := range secondaries {
			if n := got[string(encodeArgs(c.args))]; n != 1 {
				t.Errorf("round %d: %q delivered %d times, want once", round, c.args, n)
			}
		}
	}
	// A message that the old primary did not answer goes to the new one.
	if errs > 0 {
		t.Errorf("%d of %d launches ended with an error (logged above)", errs, launches)
	}
	summary(t, "handover: rounds=%d launches=%d answered=%d (by_old=%d by_new=%d) new_primaries=%d errors=%d",
		rounds, launches, answered, byOld, byNew, rounds, errs)
}
