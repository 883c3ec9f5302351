//go:build unix && !aix

package instance

import (
	"crypto/rand"
	"io"
	mrand "math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-instance/instance/handoff"
)

// 4. A hostile region: while the primary serves, another process (the
// test) writes random bytes over the region file, truncates or grows it,
// and flips header fields. The primary never panics, never delivers
// garbage, and serves the next honest message. Then the same with the
// damage done while honest launches are in flight: each ends answered or
// with a clear error. Under the race detector the damage in flight leaves
// out truncation (see raceEnabled); CI runs the suite without it too.
func TestTortureHostileRegion(t *testing.T) {
	rounds := count(300, 3000)
	var faults, answered, errs atomic.Int64
	for _, bell := range bells() {
		dir := testDir(t)
		p := startChild(t, childOpts{dir: dir, bell: bell, args: []string{"primary"}})
		if l := p.next(20 * time.Second); l != "PRIMARY" {
			t.Fatalf("%q, want PRIMARY", l)
		}
		// Read the primary's lines as they come: thousands of them would
		// fill its stdout and stop its handler.
		var msgs []string
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			for l := range p.lines {
				msgs = append(msgs, l)
			}
		}()
		f, err := os.OpenFile(prefixFor(t, dir)+".lock", os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		size := st.Size()
		honest := map[string]bool{}
		launch := func(i int) *child {
			args := []string{"honest", bellName(bell), strconv.Itoa(i)}
			honest[string(encodeArgs(args))] = true
			return startChild(t, childOpts{dir: dir, bell: bell, args: args, timeout: 10 * time.Second})
		}

		// Damage, then an honest launch, which must be answered.
		for i := range rounds {
			var did []string
			for range 1 + mrand.N(3) {
				did = append(did, injectFault(t, f, size, true))
				faults.Add(1)
			}
			s := launch(i)
			if l := s.next(30 * time.Second); !strings.HasPrefix(l, "SECONDARY ") {
				t.Errorf("after %q: %q", did, l)
			}
			s.cmd.Wait() // its pipes closed: the long mode starts thousands
			answered.Add(1)
		}

		// Damage while honest launches are in flight.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				injectFault(t, f, size, !raceEnabled)
				faults.Add(1)
				time.Sleep(time.Duration(mrand.N(2000)) * time.Microsecond)
			}
		}()
		for i := range rounds / 3 {
			s := launch(rounds + i)
			switch l := s.next(30 * time.Second); {
			case strings.HasPrefix(l, "SECONDARY "):
				checkSecondary(t, s, l)
				answered.Add(1)
			case strings.HasPrefix(l, "ERROR ") && strings.Contains(l, "instance: "):
				errs.Add(1)
				t.Log("under fire:", l)
			default:
				t.Errorf("launch under fire: %q", l)
			}
			s.cmd.Wait()
		}
		close(stop)
		wg.Wait()

		// The primary delivered honest messages only, and exits cleanly.
		p.stdin.Close()
		select {
		case <-drained:
		case <-time.After(30 * time.Second):
			t.Fatal("the primary did not exit")
		}
		for _, l := range msgs {
			if !strings.HasPrefix(l, "MSG ") {
				t.Errorf("primary: %q", l)
				continue
			}
			a, _ := parseMsg(t, l)
			if !honest[string(encodeArgs(a))] {
				t.Errorf("the primary delivered a message nobody sent: %q", a)
			}
		}
		if err := p.cmd.Wait(); err != nil {
			t.Errorf("primary: %v", err)
		}
	}
	summary(t, "hostile_region: faults=%d honest_answered=%d errors_under_fire=%d garbage_delivered=0 primary_crashes=0",
		faults.Load(), answered.Load(), errs.Load())
}

// injectFault does one random kind of damage to the region file and names
// it; shrink allows truncation.
func injectFault(t *testing.T, f *os.File, size int64, shrink bool) string {
	junk := func(n int) []byte {
		b := make([]byte, n)
		rand.Read(b)
		return b
	}
	kinds := []string{"junk", "header junk", "header bit", "slot words", "truncated", "grown", "header zeroed"}
	kind := mrand.N(len(kinds))
	for !shrink && kinds[kind] == "truncated" {
		kind = mrand.N(len(kinds))
	}
	var err error
	switch kind {
	case 0: // random bytes anywhere
		_, err = f.WriteAt(junk(1+mrand.N(4096)), mrand.Int64N(size))
	case 1: // random bytes in the header
		_, err = f.WriteAt(junk(1+mrand.N(handoff.HeaderSize)), mrand.Int64N(handoff.HeaderSize))
	case 2: // one header bit flipped
		b := make([]byte, 1)
		off := mrand.Int64N(handoff.HeaderSize)
		switch _, err = f.ReadAt(b, off); err {
		case nil:
			b[0] ^= 1 << mrand.N(8)
			_, err = f.WriteAt(b, off)
		case io.EOF:
			err = nil // a truncation just before, not yet repaired, left no byte there
		}
	case 3: // random words where the slots' states are
		_, err = f.WriteAt(junk(8), handoff.HeaderSize+mrand.Int64N(64<<10)&^7)
	case 4: // truncated
		err = f.Truncate(mrand.Int64N(size))
	case 5: // grown
		err = f.Truncate(size + 1 + mrand.Int64N(1<<20))
	case 6: // the header zeroed
		_, err = f.WriteAt(make([]byte, handoff.HeaderSize), 0)
	}
	if err != nil {
		t.Error(err)
	}
	return kinds[kind]
}
