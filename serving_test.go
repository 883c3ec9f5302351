package instance

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// receiverRounds counts the receiver's rounds of the instances a test
// registers.
var receiverRounds sync.Map // *Instance -> *atomic.Int64

func init() {
	testHookReceiverRound = func(inst *Instance) {
		if n, ok := receiverRounds.Load(inst); ok {
			n.(*atomic.Int64).Add(1)
		}
	}
}

func countRounds(t *testing.T, inst *Instance) *atomic.Int64 {
	n := new(atomic.Int64)
	receiverRounds.Store(inst, n)
	t.Cleanup(func() { receiverRounds.Delete(inst) })
	return n
}

// waitIdle waits until n Serve calls wait on the doorbell.
func waitIdle(t *testing.T, inst *Instance, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		inst.mu.Lock()
		idle := inst.idle
		inst.mu.Unlock()
		if idle == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d Serve calls wait on the doorbell, want %d", idle, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// With a Serve waiting on the doorbell (in the futex's set of Serve calls,
// or on a FIFO or Windows event of their own), a launch wakes that Serve
// alone: the receiver sleeps through it.
func TestIdleServeWakesAlone(t *testing.T) {
	forEachBell(t, func(t *testing.T, bell uint32) {
		dir := testDir(t)
		inst, rounds := idleServe(t, dir, bell)
		launchesWakeServeAlone(t, inst, rounds, dir, bell)
	})
}

// idleServe makes the test process the primary in dir, with one Serve,
// waiting, and returns it with the count of its receiver's rounds.
func idleServe(t *testing.T, dir string, bell uint32) (*Instance, *atomic.Int64) {
	t.Helper()
	inst := acquirePrimary(t, dir, bell)
	rounds := countRounds(t, inst)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go inst.Serve(ctx, func(m *Message) Reply { return Reply{Code: 3, Data: replyFor(m.Args)} })
	waitIdle(t, inst, 1)
	return inst, rounds
}

// launchesWakeServeAlone launches secondaries one after another and
// checks that the receiver of inst, whose one Serve waits, sleeps through
// them.
func launchesWakeServeAlone(t *testing.T, inst *Instance, rounds *atomic.Int64, dir string, bell uint32) {
	t.Helper()
	const launches = 10
	before := rounds.Load()
	for i := range launches {
		c := startChild(t, childOpts{dir: dir, bell: bell, args: []string{"launch", string(rune('a' + i))}})
		checkSecondary(t, c, c.next(20*time.Second))
		c.cmd.Wait()
		waitIdle(t, inst, 1)
	}
	// Without the Serve calls' bell it wakes at least once a launch; with
	// it only a sender's check after 1 ms of waiting (a slow machine)
	// wakes it.
	if woke := rounds.Load() - before; woke >= launches {
		t.Errorf("the receiver woke %d times for %d launches answered by a waiting Serve", woke, launches)
	}
}

// A count of waiting Serve calls that is wrong (damage: none waits) delays
// a message until its sender's first check rings the receiver too, but
// does not lose it.
func TestServingWordDamaged(t *testing.T) {
	dir := testDir(t)
	inst := acquirePrimary(t, dir, defaultBell)
	handling, finish := make(chan struct{}), make(chan struct{})
	go inst.Serve(context.Background(), func(m *Message) Reply {
		if m.Args[0] == "slow" {
			close(handling)
			<-finish
		}
		return Reply{Code: 3, Data: replyFor(m.Args)}
	})
	slow := startChild(t, childOpts{dir: dir, bell: defaultBell, args: []string{"slow"}})
	<-handling // the only Serve is busy
	inst.mu.Lock()
	atomic.StoreUint32(inst.view.ServingWord(), 5)
	inst.mu.Unlock()
	c := startChild(t, childOpts{dir: dir, bell: defaultBell, args: []string{"next"}})
	deadline := time.Now().Add(20 * time.Second)
	for {
		inst.mu.Lock()
		queued := len(inst.queue)
		inst.mu.Unlock()
		if queued == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the message sent while the count was wrong never arrived")
		}
		time.Sleep(time.Millisecond)
	}
	close(finish)
	checkSecondary(t, slow, slow.next(20*time.Second))
	checkSecondary(t, c, c.next(20*time.Second))
}
