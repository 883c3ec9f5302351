package instance

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/go-instance/instance/handoff"
	"github.com/go-instance/instance/shm"
)

// A publication is a region with the files, lock and doorbells through
// which launches reach it. When the lock file is removed under a running
// primary (by a temp-dir cleaner, say), the primary publishes a new one
// (heal, in removed_unix.go) and retires the one it had. A retired region
// stays mapped, locked and served until Release: a sender that opened the
// old file before the removal still gets its answer through it, and finds
// its primary alive (the old lock held) rather than taking over as the
// primary of a file that no launch can find.
type publication struct {
	files     *files
	lock      ownerLock
	region    mapping
	view      *handoff.Region
	rc        *handoff.Receiver
	bell      shm.Doorbell
	serve     shm.Doorbell // its idle Serve calls' own (see Instance.serveBell), or nil
	slotBells []shm.Doorbell
	forwarded bool     // its doorbell has a forwarder
	fifos     []string // the FIFO doorbell's FIFOs made aside, as in fifoNames, until placed
}

// retire makes the current publication a retired one and r the current one,
// and wakes the receiver, which still waits on the old doorbell. Called
// with mu held.
func (inst *Instance) retire(r *publication) {
	old := &publication{files: inst.files, lock: inst.lock, region: inst.region, view: inst.view, rc: inst.rc, bell: inst.bell, serve: inst.serveBell, slotBells: inst.slotBells}
	inst.retired = append(inst.retired, old)
	inst.files, inst.lock, inst.region, inst.view, inst.rc, inst.bell, inst.serveBell, inst.slotBells = r.files, r.lock, r.region, r.view, r.rc, r.bell, r.serve, r.slotBells
	inst.publishIdle()
	// The old region's senders ring its doorbell, which is forwarded, not
	// a Serve bell that nobody reads any more.
	catchFault(func() { atomic.StoreUint32(old.view.ServingWord(), 0) })
	ringRegion(old.view, old.bell) // Serve calls waiting on it wait on the new one
	if old.serve != nil {
		old.serve.Ring() // as does the one waiting on the old Serve bell
	}
}

// isRetired reports whether rc is a retired region's receiver. Called
// with mu held.
func (inst *Instance) isRetired(rc *handoff.Receiver) bool {
	for _, r := range inst.retired {
		if r.rc == rc {
			return true
		}
	}
	return false
}

// pollRetired moves the retired regions' slots along, queues the messages
// completed, and reports whether it queued any. Called with mu held, by
// the receiving goroutine or, with a futex doorbell (which wakes every
// waiter), by Serve: the old doorbell has no other waiter than these when
// it goes to a forwarder, where two readers of one FIFO could take each
// other's wake-ups.
func (inst *Instance) pollRetired() (queued bool) {
	for _, r := range inst.retired {
		var seen uint32
		var done []handoff.Incoming
		if catchFault(func() {
			seen = atomic.LoadUint32(r.view.BellWord())
			done, _ = r.rc.Poll()
		}) != nil {
			continue // truncated by a process that has it open: its senders time out
		}
		for _, in := range done {
			queued = inst.accept(in, r.rc) || queued
		}
		if !r.forwarded {
			r.forwarded = true
			inst.forwards.Add(1)
			go inst.forward(r, seen)
		}
	}
	return queued
}

// forward waits on a retired region's doorbell, which its senders ring,
// and rings the current one, on which the receiver waits: the receiver
// then polls every region. seen is the word's value before the last poll.
func (inst *Instance) forward(r *publication, seen uint32) {
	defer inst.forwards.Done()
	for {
		var err error
		if catchFault(func() { err = r.bell.Wait(seen, -1) }) != nil {
			return
		}
		if err != nil {
			time.Sleep(10 * time.Millisecond) // do not spin on a broken doorbell
		}
		inst.mu.Lock()
		if inst.closing {
			inst.mu.Unlock()
			return
		}
		// Read before ringing: a sender that rings after this read wakes
		// the next Wait at once.
		if catchFault(func() { seen = atomic.LoadUint32(r.view.BellWord()) }) != nil {
			inst.mu.Unlock()
			return
		}
		inst.ringLocked()
		inst.mu.Unlock()
	}
}

// stopForwards ends the forwarders, after closing was set.
func (inst *Instance) stopForwards() {
	inst.mu.Lock()
	for _, r := range inst.retired {
		ringRegion(r.view, r.bell)
	}
	inst.mu.Unlock()
	inst.forwards.Wait()
}

// close closes a retired region to its senders, which then retry, and
// releases it. Called with mu held, after its forwarder has ended.
func (r *publication) close(cfg *config) error {
	catchFault(r.view.Close)
	for i := range r.slotBells {
		ringSlot(cfg, r.files, r.view, r.slotBells, i)
	}
	errs := []error{r.bell.Close(), r.region.Close(), r.lock.Close()}
	if r.serve != nil {
		errs = append(errs, r.serve.Close())
	}
	for _, b := range r.slotBells {
		if b != nil {
			errs = append(errs, b.Close())
		}
	}
	return errors.Join(errs...)
}
